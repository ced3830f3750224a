// Failures under steady load, with real processes: a gRPC producer emits
// numbered events to one room at a fixed rate while socket.io-client sockets on
// every edge record what they receive, and one part of the cluster fails:
//   1. kill -9 of one of three edges;
//   2. SIGKILL of one of three clustered nats-servers (JetStream on);
//   3. a restart of one of two control planes;
//   4. SIGSTOP of an edge past its presence lease, then SIGCONT.
// Each test asserts what the clients and presence (GetPresence, WatchPresence,
// user-status-change) show, and reports its recovery figures as test
// diagnostics prefixed "chaos" (collected in docs/reliability.md).
//
// Cluster-only: every suite starts a cluster of its own. No fixed waits: the
// producer paces itself with a timer (that is the load), every wait is a
// condition with a deadline, and "nothing more happened" is shown by waiting
// until the clients received load sent a given time after the fact.

import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import { startBalancer } from './lib/balancer.mjs';
import {
  SocketPool,
  claims,
  createRoomcastClient,
  fetchMetrics,
  signHs256,
  startCluster,
  waitFor,
  waitReady,
} from './lib/index.mjs';

const SECRET = 'e2e-chaos-hs256-secret-0123456789abcdef';
const ROOM = 'load';
const EVENT = 'n';
const STATUS_EVENT = 'user-status-change';
/** Emits per second of the steady load. */
const RATE = 200;
/** How long the load runs after the failure has been recovered from. */
const TAIL_MS = 1500;
/** Slack on top of documented bounds, for a loaded 2-core machine. */
const MARGIN_MS = 2000;

const EDGE_ARGS = ['--namespace', '/', '--jwt-secret', SECRET];
const range = (n) => Array.from({ length: n }, (_, i) => i);
let userSeq = 0;
const uid = (name) => `${name}-${process.pid}-${++userSeq}`;
const asUser = (user, opts = {}) => ({
  auth: { token: signHs256(claims(user, { rooms: [ROOM] }), SECRET) },
  transports: ['websocket'],
  ...opts,
});
/** socket.io-client's own reconnection, quick, as a chat client would set it. */
const RECONNECTING = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500 };

function report(t, scenario, figures) {
  const line = `chaos ${scenario} ${JSON.stringify(figures)}`;
  t.diagnostic(line);
  if (process.env.ROOMCAST_CHAOS_LOG) console.log(line);
}

/**
 * Emits `[n]` for n = 1, 2, … to ROOM at RATE per second, one emit at a time
 * (so they are one producer's ordered emits). With several gRPC clients (one
 * per control plane), a failed emit is retried on the next one, as a backend
 * given every control plane's address would do; with one, it is recorded as
 * failed and the next number follows.
 */
class Producer {
  constructor(apis, { rate = RATE } = {}) {
    this.apis = apis;
    this.rate = rate;
    this.current = 0;
    /** One record per number: { n, at, ok, okAt, via, failures: [{ via, code, at }] }. */
    this.sent = [];
    this.running = false;
  }

  start() {
    this.running = true;
    this.done = this.#loop();
    return this;
  }

  async stop() {
    this.running = false;
    await this.done;
  }

  async #loop() {
    const interval = 1000 / this.rate;
    const t0 = performance.now();
    for (let n = 1; this.running; n++) {
      const wait = t0 + (n - 1) * interval - performance.now();
      if (wait > 0) await delay(wait); // pacing of the load, not a wait for anything
      await this.#send(n);
    }
  }

  async #send(n) {
    const rec = { n, at: Date.now(), ok: false, failures: [] };
    this.sent.push(rec);
    const attempts = this.apis.length === 1 ? 1 : this.apis.length * 3;
    for (let i = 0; i < attempts; i++) {
      try {
        await this.apis[this.current].emit({ to: { rooms: [ROOM] }, event: EVENT, args_json: `[${n}]` });
        Object.assign(rec, { ok: true, okAt: Date.now(), via: this.current });
        return;
      } catch (err) {
        rec.failures.push({ via: this.current, code: err.code, at: Date.now() });
        this.current = (this.current + 1) % this.apis.length;
      }
    }
  }

  /** When number `n` was first tried. */
  sentAt(n) {
    return this.sent[n - 1].at;
  }

  get okNumbers() {
    return this.sent.filter((r) => r.ok).map((r) => r.n);
  }

  get lastOk() {
    return this.okNumbers.at(-1) ?? 0;
  }

  /** The first number sent successfully at or after `time`, waiting for it. */
  firstOkAfter(time, timeoutMs = 20_000) {
    return waitFor(
      () => this.sent.find((r) => r.ok && r.at >= time)?.n,
      timeoutMs,
      `the producer to emit after ${new Date(time).toISOString()}`,
    );
  }
}

/** Records the numbered events (with arrival times), disconnects and status broadcasts of a client. */
function record(client, name) {
  client.name = name;
  client.numbers = [];
  client.disconnects = [];
  client.statuses = [];
  client.socket.on(EVENT, (n) => client.numbers.push({ n, at: Date.now() }));
  client.socket.on('disconnect', (reason) => client.disconnects.push({ reason, at: Date.now() }));
  client.socket.on(STATUS_EVENT, (body) => client.statuses.push({ ...body, at: Date.now() }));
  return client;
}

const maxReceived = (client) => client.numbers.reduce((m, x) => Math.max(m, x.n), 0);

/** Waits until every client received number `n` or a later one. */
function waitReceived(clients, n, timeoutMs = 20_000, what = `every client to receive event ${n}`) {
  return waitFor(() => clients.every((c) => maxReceived(c) >= n), timeoutMs, what, 20);
}

/**
 * What a client received against what the producer sent: duplicates, numbers
 * that came after a higher one, and numbers emitted successfully that never
 * arrived (from the first the client could have received to the last sent).
 */
function analyse(client, producer, from = 1) {
  const seen = new Set();
  let duplicates = 0;
  let reordered = 0;
  let max = 0;
  for (const { n } of client.numbers) {
    if (seen.has(n)) duplicates++;
    else if (n < max) reordered++;
    seen.add(n);
    max = Math.max(max, n);
  }
  const missing = producer.okNumbers.filter((n) => n >= from && !seen.has(n));
  return { duplicates, reordered, missing };
}

/** Splits a client's arrivals at `time`: the last number before it, the first after it. */
function gapAround(client, time) {
  const before = client.numbers.filter((x) => x.at < time);
  const after = client.numbers.filter((x) => x.at >= time);
  return { lastBefore: before.at(-1), firstAfter: after[0] };
}

/** WatchPresence with arrival times of its own. */
async function watchPresence(api, userIds) {
  const watch = api.watchPresence({ user_ids: userIds });
  watch.timed = [];
  watch.call.on('data', (e) => watch.timed.push({ ...e, at: Date.now() }));
  return watch.ready();
}
const transitions = (watch, user) =>
  watch.timed.filter((e) => e.user_id === user && (e.kind === 'online' || e.kind === 'offline'));

async function presenceOf(api, users) {
  return (await api.getPresence({ user_ids: users })).users;
}

/** Polls GetPresence until every user's entry satisfies `predicate`. */
async function waitPresence(api, users, predicate, what, timeoutMs = 15_000) {
  let last;
  try {
    return await waitFor(
      async () => {
        last = await presenceOf(api, users);
        return last.every(predicate) && last;
      },
      timeoutMs,
      `GetPresence to report ${what}`,
      50,
    );
  } catch (err) {
    throw new Error(`${err.message}; last answer: ${JSON.stringify(last)}`);
  }
}

const statusKinds = (client, user, since = 0) =>
  client.statuses.filter((s) => s.userId === user && s.at >= since).map((s) => s.status);

/** Each client's socket node, from FetchSockets. */
async function nodesOf(api, clients) {
  const { sockets } = await api.fetchSockets({ target: {} });
  const node = new Map(sockets.map((s) => [s.id, s.node_id]));
  return clients.map((c) => node.get(c.socket.id));
}

/** Everything a test starts, stopped in reverse order even when it fails. */
function resources() {
  const stack = [];
  return {
    add(stop) {
      stack.push(stop);
    },
    async stopAll() {
      const errors = [];
      while (stack.length) {
        try {
          await stack.pop()();
        } catch (err) {
          errors.push(err);
        }
      }
      if (errors.length) throw errors[0];
    },
  };
}

const presenceArgs = ({ ttl, grace, replicas = 1, audience = 'namespace' }) => [
  '--presence-lease-ttl-ms', String(ttl),
  '--presence-grace-ms', String(grace),
  '--presence-replicas', String(replicas),
  '--presence-audience', audience,
];

async function startChaosCluster(res, { natsNodes = 1, edges = 3, controls = 1, presence }) {
  const cluster = await startCluster({
    natsNodes,
    edges,
    controls,
    edgeArgs: [...EDGE_ARGS, ...presence],
    controlArgs: presence,
  });
  res.add(() => cluster.stop());
  const apis = cluster.controls.map((c) => createRoomcastClient(c.grpcAddr, { deadlineMs: 3000 }));
  res.add(() => apis.forEach((a) => a.close()));
  const pool = new SocketPool(cluster.httpUrls);
  res.add(() => pool.closeAll());
  return { cluster, apis, api: apis[0], pool };
}

/** Starts the producer and waits until every client receives its load. */
async function startLoad(res, apis, clients) {
  const producer = new Producer(apis).start();
  res.add(() => producer.stop());
  await waitReceived(clients, 2 * RATE / 10, 20_000, 'every client to receive the steady load');
  return producer;
}

/** Stops the load once `clients` received what was sent TAIL_MS after `since`, and lets them drain. */
async function finishLoad(producer, clients, since) {
  const tail = await producer.firstOkAfter(since + TAIL_MS);
  await waitReceived(clients, tail, 20_000, `every client to receive event ${tail} (the tail of the load)`);
  await producer.stop();
  const last = producer.lastOk;
  await waitReceived(clients, last, 20_000, `every client to receive the last event ${last}`);
}

function assertClean(client, producer, from = 1) {
  const { duplicates, reordered, missing } = analyse(client, producer, from);
  assert.deepEqual(
    { duplicates, reordered, missing: missing.length },
    { duplicates: 0, reordered: 0, missing: 0 },
    `${client.name}: missing ${missing.slice(0, 20).join(',')}${missing.length > 20 ? ',…' : ''}`,
  );
}

describe('chaos under steady load', { timeout: 600_000 }, () => {
  let res;
  afterEach(async () => {
    await res?.stopAll();
    res = undefined;
  });

  it('kill -9 of one of three edges: the others lose nothing, its users go offline within the lease, its clients move and receive again', async (t) => {
    const TTL = 1500;
    const GRACE = 300;
    res = resources();
    const { cluster, api, pool } = await startChaosCluster(res, { presence: presenceArgs({ ttl: TTL, grace: GRACE }) });
    const balancer = await startBalancer(cluster.edges);
    res.add(() => balancer.stop());
    const viaBalancer = new SocketPool(balancer.url);
    res.add(() => viaBalancer.closeAll());

    // Nine reconnecting clients through the balancer (three per edge), and two
    // on the doomed edge that do not come back.
    const movers = [];
    for (const i of range(9)) {
      const user = uid(`mover${i}`);
      movers.push(record(await viaBalancer.connect('/', asUser(user, RECONNECTING)), user));
    }
    const doomedIndex = 2;
    const doomed = cluster.edges[doomedIndex];
    const lone = [];
    for (const i of range(2)) {
      const user = uid(`lone${i}`);
      lone.push(record(await pool.connectAt(doomedIndex, '/', asUser(user)), user));
    }
    const everyone = [...movers, ...lone];
    const nodes = await nodesOf(api, movers);
    const moving = movers.filter((_, i) => nodes[i] === doomed.nodeId);
    const staying = movers.filter((_, i) => nodes[i] !== doomed.nodeId);
    assert.ok(moving.length >= 1 && staying.length >= 2, `the balancer spread the clients: ${nodes}`);
    const users = everyone.map((c) => c.name);
    await waitPresence(api, users, (p) => p.online && p.sockets === 1, 'every user online');
    const watch = await watchPresence(api, users);
    res.add(() => watch.close());

    const producer = await startLoad(res, [api], everyone);
    const killedAt = Date.now();
    await doomed.kill();
    const exitedAt = Date.now();

    // The lone users: offline once the lease expires (plus the grace).
    await waitFor(
      () => lone.every((c) => transitions(watch, c.name).some((e) => e.kind === 'offline')),
      TTL * 2 + GRACE + 10_000,
      'the lone users to go offline on WatchPresence',
    );
    const offlineAfter = lone.map((c) => transitions(watch, c.name).find((e) => e.kind === 'offline').at - killedAt);
    // The moved clients: a new socket on a surviving edge, receiving what is emitted after the crash.
    const firstAfter = await Promise.all(
      moving.map(async (c) => {
        await waitFor(
          () => c.socket.connected && c.numbers.some((x) => producer.sentAt(x.n) >= exitedAt),
          20_000,
          `${c.name} to reconnect and receive again`,
        );
        return c.numbers.find((x) => producer.sentAt(x.n) >= exitedAt);
      }),
    );
    await finishLoad(producer, [...staying, ...moving], Math.max(...firstAfter.map((x) => x.at)));

    const bound = TTL + TTL / 3 + GRACE + MARGIN_MS;
    const moved = moving.map((c, i) => {
      const { lastBefore } = gapAround(c, killedAt);
      return {
        resumeMs: firstAfter[i].at - killedAt,
        missed: analyse(c, producer).missing.length,
        lastBefore: lastBefore?.n,
        firstAfter: firstAfter[i].n,
      };
    });
    report(t, 'edge-kill', {
      offlineMs: offlineAfter,
      boundMs: bound,
      moved,
      staying: staying.length,
      emitted: producer.sent.length,
      failedEmits: producer.sent.filter((r) => !r.ok).length,
    });

    for (const c of staying) {
      assertClean(c, producer);
      assert.deepEqual(c.disconnects, [], `${c.name} was never disconnected`);
    }
    for (const [i, c] of moving.entries()) {
      const { duplicates, reordered, missing } = analyse(c, producer);
      assert.deepEqual({ duplicates, reordered }, { duplicates: 0, reordered: 0 }, c.name);
      // Only what was emitted while it moved is missing: everything after its first event back arrived.
      assert.deepEqual(missing.filter((n) => n >= firstAfter[i].n), [], `${c.name} after it came back`);
      assert.deepEqual(c.disconnects.map((d) => d.reason), ['transport close'], c.name);
    }
    for (const ms of offlineAfter) assert.ok(ms <= bound, `offline ${ms}ms after the crash, bound ${bound}ms`);
    const end = await presenceOf(api, users);
    for (const [i, p] of end.entries()) {
      const c = everyone[i];
      const expected = lone.includes(c) ? { online: false, sockets: 0 } : { online: true, sockets: 1 };
      assert.deepEqual({ online: p.online, sockets: p.sockets }, expected, c.name);
      // The movers came back within the lease: they never went offline.
      const kinds = transitions(watch, c.name).map((e) => e.kind);
      assert.deepEqual(kinds, lone.includes(c) ? ['offline'] : [], `${c.name} on WatchPresence`);
    }
  });

  it('SIGKILL of one of three nats-servers: edges on the others lose nothing, edges on it resubscribe and resume, presence holds', async (t) => {
    const TTL = 3000;
    const GRACE = 1000;
    res = resources();
    const { cluster, api, pool } = await startChaosCluster(res, {
      natsNodes: 3,
      presence: presenceArgs({ ttl: TTL, grace: GRACE, replicas: 3 }),
    });
    const serverOf = async (name) => {
      const found = await waitFor(() => cluster.nats.connection(name), 20_000, `${name} on a live nats-server`, 50);
      return cluster.nats.servers.indexOf(found.server);
    };
    const edgeName = (e) => `roomcast-edge-${e.nodeId}`;
    const control = cluster.controls[0];
    // The victim holds one or two edges (so that some edges stay on their
    // server) and not the control plane (the producer's path is not what this
    // scenario tests): restart processes until the NATS clients' random
    // server picks allow one.
    let victim = -1;
    let edgeServers;
    for (let attempt = 0; victim < 0 && attempt < 10; attempt++) {
      if (attempt > 0) await Promise.all([control.restart(), cluster.edges[attempt % 3].restart()]);
      edgeServers = await Promise.all(cluster.edges.map((e) => serverOf(edgeName(e))));
      const controlServer = await serverOf(`roomcast-control-${control.nodeId}`);
      const candidates = [0, 1, 2].filter((s) => s !== controlServer && [1, 2].includes(count(edgeServers, s)));
      victim = candidates.sort((a, b) => count(edgeServers, b) - count(edgeServers, a))[0] ?? -1;
    }
    assert.ok(victim >= 0, `no nats-server holds one or two edges and not the control plane: ${edgeServers}`);

    const clients = [];
    for (const e of range(3)) {
      for (const k of range(2)) {
        const user = uid(`e${e}u${k}`);
        clients.push(record(await pool.connectAt(e, '/', asUser(user)), user));
      }
    }
    clients.forEach((c, i) => {
      c.edge = Math.floor(i / 2);
    });
    const affected = clients.filter((c) => edgeServers[c.edge] === victim);
    const unaffected = clients.filter((c) => edgeServers[c.edge] !== victim);
    const users = clients.map((c) => c.name);
    await waitPresence(api, users, (p) => p.online && p.sockets === 1, 'every user online');
    const watch = await watchPresence(api, users);
    res.add(() => watch.close());

    const producer = await startLoad(res, [api], clients);
    const killedAt = Date.now();
    await cluster.nats.servers[victim].kill();

    const moved = cluster.edges.filter((_, i) => edgeServers[i] === victim);
    const reconnected = await Promise.all(
      moved.map(async (e) => {
        const server = await serverOf(edgeName(e));
        return { edge: e.nodeId, server, ms: Date.now() - killedAt };
      }),
    );
    // Receiving again: an event emitted after the kill arrives.
    const firstAfter = await Promise.all(
      affected.map(async (c) => {
        await waitFor(() => c.numbers.some((x) => producer.sentAt(x.n) >= killedAt), 20_000, `${c.name} to receive again`);
        return c.numbers.find((x) => producer.sentAt(x.n) >= killedAt);
      }),
    );
    for (const p of [...cluster.edges, ...cluster.controls]) await waitReady(p.adminUrl, 20_000, p.nodeId);
    await finishLoad(producer, clients, Math.max(killedAt, ...firstAfter.map((x) => x.at)));

    // Presence rides out the election of new JetStream leaders: nobody went offline.
    const end = await waitPresence(api, users, (p) => p.online && p.sockets === 1, 'every user online, one socket each');
    const gaps = affected.map((c) => {
      const { missing } = analyse(c, producer);
      // Resumed: the first event after the missed run arrived.
      const resumed = missing.length ? c.numbers.find((x) => x.n > missing.at(-1)) : undefined;
      return {
        client: c.name,
        missed: missing.length,
        missedMs: missing.length ? producer.sentAt(missing.at(-1)) - producer.sentAt(missing[0]) : 0,
        resumeMs: resumed ? resumed.at - killedAt : 0,
      };
    });
    report(t, 'nats-kill', {
      victim: `nats-${victim + 1}`,
      edgesOnVictim: moved.map((e) => e.nodeId),
      natsReconnect: reconnected,
      affected: gaps,
      unaffected: unaffected.length,
      emitted: producer.sent.length,
      failedEmits: producer.sent.filter((r) => !r.ok).length,
      presenceTransitions: watch.timed.filter((e) => e.kind === 'online' || e.kind === 'offline').length,
    });

    for (const c of unaffected) assertClean(c, producer);
    for (const c of affected) {
      const { duplicates, reordered, missing } = analyse(c, producer);
      assert.deepEqual({ duplicates, reordered }, { duplicates: 0, reordered: 0 }, c.name);
      // What is missing is one run, sent while the edge was away from NATS.
      if (missing.length) {
        const run = producer.okNumbers.filter((n) => n >= missing[0] && n <= missing.at(-1));
        assert.deepEqual(missing, run, `${c.name} missed one contiguous run`);
      }
    }
    for (const c of clients) assert.deepEqual(c.disconnects, [], `${c.name} was never disconnected`);
    assert.equal(end.length, users.length);
    for (const user of users) assert.deepEqual(transitions(watch, user), [], `${user}: no transition on WatchPresence`);
    assert.deepEqual(producer.sent.filter((r) => !r.ok).map((r) => r.n), [], 'every emit succeeded');
  });

  it('SIGKILL of the control plane\'s own nats-server: it reconnects and takes no healthy edge for dead', async (t) => {
    const TTL = 3000;
    res = resources();
    const { cluster, pool } = await startChaosCluster(res, {
      natsNodes: 3,
      presence: presenceArgs({ ttl: TTL, grace: 0, replicas: 3 }),
    });
    const control = cluster.controls[0];
    const controlName = `roomcast-control-${control.nodeId}`;
    const serverOf = async (name) => {
      const found = await waitFor(() => cluster.nats.connection(name), 20_000, `${name} on a live nats-server`, 50);
      return cluster.nats.servers.indexOf(found.server);
    };
    const victim = await serverOf(controlName);

    const clients = [];
    for (const e of range(3)) {
      for (const k of range(2)) {
        const user = uid(`c${e}u${k}`);
        clients.push(record(await pool.connectAt(e, '/', asUser(user, RECONNECTING)), user));
      }
    }
    const users = clients.map((c) => c.name);
    // Through a control plane that stays connected: the one under test is the judge.
    await waitPresence(createRoomcastClientFor(res, control), users, (p) => p.online && p.sockets === 1, 'every user online');
    const killedAt = Date.now();
    await cluster.nats.servers[victim].kill();
    const movedTo = await serverOf(controlName);
    const reconnectMs = Date.now() - killedAt;

    // Every edge kept writing its lease; a judge that missed those writes
    // while it was away must read them again before it declares anyone dead.
    // Three lease TTLs and more is when a false death would have come.
    await delay(3 * TTL + 1000); // proving a negative: nothing may happen in this time
    const api = createRoomcastClientFor(res, control);
    const end = await waitPresence(api, users, (p) => p.online && p.sockets === 1, 'every user online, one socket each');
    const statuses = clients.flatMap((c) => c.statuses.filter((s) => s.at >= killedAt));
    const controlMetrics = await fetchMetrics(control.adminUrl);
    report(t, 'control-nats-kill', {
      victim: `nats-${victim + 1}`,
      controlMovedTo: `nats-${movedTo + 1}`,
      reconnectMs,
      statusBroadcasts: statuses.length,
      leaseExpiries: controlMetrics.get('roomcast_presence_lease_expiries_total') ?? 0,
      watchRestarts: controlMetrics.get('roomcast_presence_watch_restarts_total') ?? 0,
    });
    assert.equal(end.length, users.length);
    assert.deepEqual(statuses, [], 'no user-status-change: nobody went offline');
    assert.equal(controlMetrics.get('roomcast_presence_lease_expiries_total') ?? 0, 0, 'no lease taken for expired');
    for (const c of clients) assert.deepEqual(c.disconnects, [], `${c.name} was never disconnected`);
  });

  it('restart of one of two control planes: the producer fails over, nothing is lost, one offline per transition', async (t) => {
    const TTL = 1500;
    const GRACE = 1500;
    res = resources();
    const { cluster, apis, pool } = await startChaosCluster(res, {
      controls: 2,
      presence: presenceArgs({ ttl: TTL, grace: GRACE }),
    });
    const clients = [];
    for (const e of range(3)) {
      const user = uid(`c${e}`);
      clients.push(record(await pool.connectAt(e, '/', asUser(user)), user));
    }
    const leaverUser = uid('leaver');
    const leaver = await pool.connectAt(0, '/', asUser(leaverUser));
    const users = [...clients.map((c) => c.name), leaverUser];
    await waitPresence(apis[1], users, (p) => p.online, 'every user online');
    const watch = await watchPresence(apis[1], users);
    res.add(() => watch.close());

    const producer = await startLoad(res, apis, clients);
    // The leaver's grace runs on both control planes; one of them restarts in it.
    leaver.socket.close();
    const leftAt = Date.now();
    const restartedAt = Date.now();
    await cluster.controls[0].restart();
    const readyAt = Date.now();
    await waitFor(() => clients.every((c) => statusKinds(c, leaverUser, leftAt).includes('offline')), GRACE + 15_000, 'the offline broadcast');
    const offlineAt = Math.max(...clients.map((c) => c.statuses.find((s) => s.userId === leaverUser && s.status === 'offline').at));
    // A second broadcast would come from the other control plane's timer, right after the first.
    await finishLoad(producer, clients, offlineAt);
    // The restarted control plane serves the API again.
    const marks = clients.map((c) => {
      const got = [];
      c.socket.on('after-restart', () => got.push(true));
      return got;
    });
    // (the gRPC channel may still be backing off from the restart: UNAVAILABLE, not sent, try again)
    await waitFor(
      () => apis[0].emit({ to: { rooms: [ROOM] }, event: 'after-restart', args_json: '[1]' }).then(() => true, () => false),
      15_000,
      'an emit through the restarted control plane to succeed',
      100,
    );
    await waitFor(() => marks.every((got) => got.length >= 1), 5000, 'the emit through the restarted control plane to arrive');

    const failovers = producer.sent.filter((r) => r.failures.length);
    const okTimes = producer.sent.filter((r) => r.ok).map((r) => r.okAt);
    let longestEmitGap = 0;
    for (let i = 1; i < okTimes.length; i++) longestEmitGap = Math.max(longestEmitGap, okTimes[i] - okTimes[i - 1]);
    report(t, 'control-restart', {
      restartMs: readyAt - restartedAt,
      retriedEmits: failovers.length,
      failureCodes: [...new Set(failovers.flatMap((r) => r.failures.map((f) => f.code)))],
      longestEmitGapMs: longestEmitGap,
      offlineAfterCloseMs: offlineAt - leftAt,
      grace: GRACE,
      emitted: producer.sent.length,
      failedEmits: producer.sent.filter((r) => !r.ok).length,
    });

    assert.deepEqual(producer.sent.filter((r) => !r.ok).map((r) => r.n), [], 'every emit got through one control plane');
    for (const c of clients) {
      assertClean(c, producer);
      assert.deepEqual(statusKinds(c, leaverUser, leftAt), ['offline'], `${c.name}: one offline broadcast`);
      assert.deepEqual(c.disconnects, [], `${c.name} was never disconnected`);
    }
    assert.deepEqual(transitions(watch, leaverUser).map((e) => e.kind), ['offline'], 'WatchPresence: one offline');
    for (const c of clients) assert.deepEqual(transitions(watch, c.name), [], `${c.name} stays online`);
    const end = await presenceOf(apis[0], users);
    assert.deepEqual(end.map((p) => p.online), [true, true, true, false], 'the restarted control plane agrees');
  });

  it('SIGSTOP of an edge past its lease, then SIGCONT: its users go offline once, then its clients receive again and are online', async (t) => {
    const TTL = 1500;
    const GRACE = 300;
    res = resources();
    const { cluster, api, pool } = await startChaosCluster(res, { presence: presenceArgs({ ttl: TTL, grace: GRACE }) });
    const clients = [];
    for (const e of range(3)) {
      for (const k of range(2)) {
        const user = uid(`s${e}u${k}`);
        clients.push(record(await pool.connectAt(e, '/', asUser(user, RECONNECTING)), user));
      }
    }
    const pausedIndex = 2;
    const paused = clients.slice(4);
    const others = clients.slice(0, 4);
    const users = clients.map((c) => c.name);
    await waitPresence(api, users, (p) => p.online && p.sockets === 1, 'every user online');
    const watch = await watchPresence(api, users);
    res.add(() => watch.close());

    const producer = await startLoad(res, [api], clients);
    const edge = cluster.edges[pausedIndex];
    const proc = edge.proc;
    const stoppedAt = Date.now();
    proc.kill('SIGSTOP');
    res.add(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGCONT'); // never leave a stopped process behind
    });
    await waitFor(
      () => paused.every((c) => transitions(watch, c.name).some((e) => e.kind === 'offline')),
      TTL * 2 + GRACE + 10_000,
      'the paused edge\'s users to go offline',
    );
    const offlineMs = paused.map((c) => transitions(watch, c.name).find((e) => e.kind === 'offline').at - stoppedAt);
    const contAt = Date.now();
    proc.kill('SIGCONT');

    await waitFor(
      () => paused.every((c) => c.socket.connected && c.numbers.some((x) => x.at >= contAt)),
      20_000,
      'the paused edge\'s clients to receive again',
    );
    const resumedAt = Math.max(...paused.map((c) => c.numbers.find((x) => x.at >= contAt).at));
    let presence;
    let presenceError;
    try {
      presence = await waitPresence(api, users, (p) => p.online && p.sockets === 1, 'every user online again', 10_000);
    } catch (err) {
      presenceError = err;
    }
    const presenceAt = Date.now();
    await finishLoad(producer, clients, Math.max(resumedAt, presenceAt));

    const figures = {
      offlineMs,
      pausedMs: contAt - stoppedAt,
      resumeAfterContMs: resumedAt - contAt,
      pausedClients: paused.map((c) => ({
        client: c.name,
        missed: analyse(c, producer).missing.length,
        maxDelayMs: Math.max(...c.numbers.map((x) => x.at - producer.sentAt(x.n))),
        disconnects: c.disconnects.map((d) => d.reason),
      })),
      presenceAfterMs: presenceError ? null : presenceAt - contAt,
      presenceAtEnd: (await presenceOf(api, users)).map((p) => `${p.online ? 'online' : 'offline'}/${p.sockets}`),
      transitions: Object.fromEntries(paused.map((c) => [c.name, transitions(watch, c.name).map((e) => e.kind)])),
    };
    report(t, 'edge-pause', figures);

    for (const c of others) assertClean(c, producer);
    for (const c of paused) {
      const { duplicates, reordered } = analyse(c, producer);
      assert.deepEqual({ duplicates, reordered }, { duplicates: 0, reordered: 0 }, c.name);
    }
    if (presenceError) throw presenceError;
    assert.ok(presence);
    // The edge found its lease lost and recorded its sockets again: one
    // offline while it was taken for dead, one online after, no reconnect.
    for (const c of paused) {
      assert.deepEqual(transitions(watch, c.name).map((e) => e.kind), ['offline', 'online'], c.name);
      assert.deepEqual(c.disconnects, [], `${c.name} kept its connection`);
    }
    for (const c of others) assert.deepEqual(transitions(watch, c.name), [], `${c.name} stays online`);
    const edgeMetrics = await fetchMetrics(edge.adminUrl);
    assert.equal(edgeMetrics.get('roomcast_presence_leases_lost_total'), 1, 'the paused edge counted one lost lease');
  });
});

/** A gRPC client of one control plane, closed with the test's resources. */
function createRoomcastClientFor(res, control) {
  const api = createRoomcastClient(control.grpcAddr, { deadlineMs: 3000 });
  res.add(() => api.close());
  return api;
}

function count(list, value) {
  return list.filter((v) => v === value).length;
}
