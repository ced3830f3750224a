// Scale-out: 16 small edges, 2 control planes and a 3-node NATS cluster, with
// presence on. With directory routing (the control plane's default,
// `--command-routing directory`) a command or emit for a socket id reaches only
// the edge that owns the socket, one for a user id only the edges that hold the
// user's sockets, and a call waits only for the edges it needs, so a hung edge
// does not delay calls for other edges' sockets. What reaches an edge is read
// from its `roomcast_edge_bus_messages_total{op="emit"}` counter; a control plane
// started with `--command-routing broadcast` shows the counter sees every edge's
// copy. Latencies go to t.diagnostic only; nothing here asserts a duration.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  SocketPool,
  claims,
  createRoomcastClient,
  fetchMetrics,
  readyzStatus,
  signHs256,
  startCluster,
  startControl,
  waitFor,
} from './lib/index.mjs';

const SECRET = 'e2e-scale-hs256-secret-0123456789abcdef';
const EDGES = 16;
const EMITS = 40;
const RACE_USERS = 50;
const EMIT_SERIES = 'roomcast_edge_bus_messages_total{op="emit"}';
const ROUTED = (via) => `roomcast_control_routed_total{via="${via}"}`;
// The control planes keep a stopped edge "live" for the whole stopped-edge case
// (a broadcast call then waits for it and fails), and give up on an edge after
// 3 s, under the client's 5 s deadline.
const CONTROL_ARGS = ['--edge-ttl-ms', '20000', '--request-timeout-ms', '3000'];

let userSeq = 0;
const uid = (name) => `${name}-${process.pid}-${++userSeq}`;
const asUser = (sub) => ({ auth: { token: signHs256(claims(sub), SECRET) } });
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

/** The first argument of every `event` a client received, sorted. */
const sortedFirstArgs = (client, event) => client.argsOf(event).map((a) => a[0]).sort((x, y) => x - y);

/** Each edge's count of emits received from the bus, in edge order. */
function emitCounts(cluster) {
  return Promise.all(cluster.edges.map(async (e) => (await fetchMetrics(e.adminUrl)).get(EMIT_SERIES) ?? 0));
}

/** Each edge's emits received since `before` (a result of emitCounts). */
async function emitDeltas(cluster, before) {
  return (await emitCounts(cluster)).map((v, i) => v - before[i]);
}

/** The control planes' `roomcast_control_routed_total{via}`, summed. */
async function routed(controls, via) {
  return sum(await Promise.all(controls.map(async (c) => (await fetchMetrics(c.adminUrl)).get(ROUTED(via)) ?? 0)));
}

describe(`roomcast scale: ${EDGES} edges, 2 control planes, 3 nats-servers, presence on`, { timeout: 240_000 }, () => {
  let cluster;
  let apis = [];
  let pool;
  const cleanups = [];

  before(async () => {
    const started = Date.now();
    cluster = await startCluster({
      natsNodes: 3,
      edges: EDGES,
      controls: 2,
      edgeArgs: ['--jwt-secret', SECRET],
      controlArgs: CONTROL_ARGS,
    });
    apis = cluster.grpcAddrs.map((addr) => createRoomcastClient(addr));
    pool = new SocketPool(cluster.httpUrls);
    process.stderr.write(`# scale cluster (${EDGES} edges, 2 controls, 3 nats) started in ${Date.now() - started} ms\n`);
  });

  afterEach(async () => {
    // Stopped processes are resumed and extra control planes stopped whatever
    // the test did.
    while (cleanups.length) await cleanups.pop()();
    pool?.closeAll();
  });

  after(async () => {
    while (cleanups.length) await cleanups.pop()();
    for (const api of apis) api.close();
    await cluster?.stop();
  });

  /**
   * Emits `n` times to `to`, alternating between `via` (gRPC clients), each
   * call awaited; returns the calls' latencies in ms.
   */
  async function emitN(via, to, event, n) {
    const ms = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await via[i % via.length].emit({ to, event, args_json: JSON.stringify([i]) });
      ms.push(performance.now() - t0);
    }
    return ms;
  }

  it('a user-targeted emit is received by the one edge that holds the user (broadcast: by every edge)', async (t) => {
    const user = uid('one');
    const home = 3;
    const c = await pool.connectAt(home, '/', asUser(user));
    const to = { user_ids: [user] };
    // The directory learns of a user through presence; the count is taken once
    // an emit reaches the client (so its record exists), then for every emit.
    await apis[0].emit({ to, event: 'warm', args_json: '[0]' });
    await c.nextEvent('warm');

    const routedBefore = await routed(cluster.controls, 'directory');
    const before = await emitCounts(cluster);
    const ms = await emitN(apis, to, 'n', EMITS);
    await waitFor(() => c.count('n') === EMITS, 10_000, `${EMITS} user emits delivered`);
    // Two control planes are two producers: once each, in no particular order.
    assert.deepEqual(sortedFirstArgs(c, 'n'), [...Array(EMITS).keys()], 'every emit once');
    const delta = await emitDeltas(cluster, before);
    t.diagnostic(`directory: edge emit messages for ${EMITS} user emits, per edge: ${delta.join(',')}`);
    t.diagnostic(`directory: user Emit latency p50 ${pct(ms, 50).toFixed(1)} ms, p99 ${pct(ms, 99).toFixed(1)} ms`);
    assert.equal(sum(delta), EMITS, `one edge message per user emit (${sum(delta) / EMITS} per emit)`);
    assert.equal(delta[home], EMITS, 'received by the edge that holds the user');
    assert.equal((await routed(cluster.controls, 'directory')) - routedBefore, EMITS, 'counted as routed by the directory');

    // The same emits from a control plane that routes by broadcast: every edge
    // receives each one, so the counter does see messages an edge drops.
    const broadcast = await startControl(
      [...cluster.common, '--node-id', 'control-broadcast', ...CONTROL_ARGS, '--command-routing', 'broadcast'],
      'roomcast control-broadcast',
    );
    const api = createRoomcastClient(broadcast.grpcAddr);
    cleanups.push(async () => {
      api.close();
      await broadcast.stop();
    });
    const bBefore = await emitCounts(cluster);
    const bRouted = await routed([broadcast], 'broadcast');
    const bms = await emitN([api], to, 'b', EMITS);
    await waitFor(() => c.count('b') === EMITS, 10_000, `${EMITS} broadcast-routed user emits delivered`);
    assert.deepEqual(c.argsOf('b').map((a) => a[0]), [...Array(EMITS).keys()], 'one producer: once each, in order');
    const bDelta = await emitDeltas(cluster, bBefore);
    t.diagnostic(`broadcast: edge emit messages for ${EMITS} user emits, per edge: ${bDelta.join(',')}`);
    t.diagnostic(`broadcast: user Emit latency p50 ${pct(bms, 50).toFixed(1)} ms, p99 ${pct(bms, 99).toFixed(1)} ms`);
    assert.deepEqual(bDelta, Array(EDGES).fill(EMITS), 'with broadcast routing every edge receives every emit');
    assert.equal((await routed([broadcast], 'broadcast')) - bRouted, EMITS, 'counted as routed by broadcast');
    assert.equal(c.count('n'), EMITS, 'nothing delivered twice');
  });

  it('an emit by socket id is received by the owning edge only', async (t) => {
    const home = 11;
    const c = await pool.connectAt(home, '/', asUser(uid('sid')));
    const before = await emitCounts(cluster);
    const ms = await emitN(apis, { socket_ids: [c.id] }, 'direct', EMITS);
    await waitFor(() => c.count('direct') === EMITS, 10_000, `${EMITS} socket-id emits delivered`);
    assert.deepEqual(sortedFirstArgs(c, 'direct'), [...Array(EMITS).keys()], 'every emit once');
    const delta = await emitDeltas(cluster, before);
    t.diagnostic(`edge emit messages for ${EMITS} socket-id emits, per edge: ${delta.join(',')}`);
    t.diagnostic(`socket-id Emit latency p50 ${pct(ms, 50).toFixed(1)} ms, p99 ${pct(ms, 99).toFixed(1)} ms`);
    assert.deepEqual(delta, delta.map((_, i) => (i === home ? EMITS : 0)), 'only the owning edge receives them');
  });

  it('a user with sockets on 3 edges: FetchSockets by user id lists all 3, an emit reaches those 3 edges only', async () => {
    const user = uid('multi');
    const homes = [4, 9, 14];
    const sockets = [];
    for (const i of homes) sockets.push(await pool.connectAt(i, '/', asUser(user)));
    const want = sockets.map((s) => s.id).sort();
    // Asked as soon as the last socket connected, through each control plane.
    for (const api of apis) {
      const res = await api.fetchSockets({ target: { user_ids: [user] } });
      assert.deepEqual(res.sockets.map((s) => s.id).sort(), want, 'every socket of the user');
      assert.deepEqual(
        res.sockets.map((s) => s.node_id).sort(),
        homes.map((i) => cluster.edges[i].nodeId).sort(),
        'each on its own edge',
      );
      for (const s of res.sockets) assert.equal(s.user_id, user);
    }
    const before = await emitCounts(cluster);
    await emitN(apis, { user_ids: [user] }, 'all', EMITS);
    await waitFor(() => sockets.every((s) => s.count('all') === EMITS), 10_000, 'the emits on every socket of the user');
    const delta = await emitDeltas(cluster, before);
    assert.deepEqual(delta, delta.map((_, i) => (homes.includes(i) ? EMITS : 0)), 'the 3 edges of the user, no other');
  });

  it(`a user emitted to as soon as its socket's connect event fires receives it (${RACE_USERS} fresh users)`, async (t) => {
    const ms = [];
    const round = async (i) => {
      const user = uid('race');
      // Every edge, each through both control planes over the rounds.
      const api = apis[Math.floor(i / EDGES) % apis.length];
      const c = pool.openAt(i % EDGES, '/', asUser(user));
      const sent = new Promise((resolve, reject) => {
        c.socket.once('connect_error', reject);
        c.socket.once('connect', () => {
          const t0 = performance.now();
          api
            .emit({ to: { user_ids: [user] }, event: 'hello', args_json: JSON.stringify([i]) })
            .then(() => resolve(ms.push(performance.now() - t0)), reject);
        });
      });
      await sent;
      await c.nextEvent('hello', (a) => a[0] === i, 5000);
      // A second emit on the same path (same producer, same user) arrives after
      // any late copy of the first: it was received exactly once.
      await api.emit({ to: { user_ids: [user] }, event: 'sentinel', args_json: '[0]' });
      await c.nextEvent('sentinel');
      assert.equal(c.count('hello'), 1, `user ${user} received the emit once`);
      c.socket.close();
    };
    // Five at a time: connects on different edges overlap, as in a real burst.
    for (let i = 0; i < RACE_USERS; i += 5) {
      await Promise.all([0, 1, 2, 3, 4].map((k) => round(i + k)));
    }
    t.diagnostic(`Emit right after connect: p50 ${pct(ms, 50).toFixed(1)} ms, p99 ${pct(ms, 99).toFixed(1)} ms`);
  });

  it('with an unrelated edge stopped (SIGSTOP), JoinRooms, FetchSockets and DisconnectSockets for a socket on a healthy edge succeed', async (t) => {
    const home = 2;
    const stopped = cluster.edges[EDGES - 2];
    const c = await pool.connectAt(home, '/', asUser(uid('hung')));
    const proc = stopped.proc;
    const resume = () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGCONT');
    };
    proc.kill('SIGSTOP');
    cleanups.push(async () => {
      resume(); // never leave a stopped process behind
      await waitFor(async () => (await readyzStatus(stopped.adminUrl)) === 200, 20_000, `${stopped.nodeId} ready again`, 100);
    });
    const timings = {};
    const timed = async (name, call) => {
      const t0 = performance.now();
      try {
        return await call();
      } finally {
        (timings[name] ??= []).push(Math.round(performance.now() - t0));
      }
    };
    const room = uid('room');
    for (const [k, api] of apis.entries()) {
      await timed('JoinRooms', () => api.joinRooms({ target: { socket_ids: [c.id] }, rooms: [`${room}-${k}`] }));
      await api.emit({ to: { rooms: [`${room}-${k}`] }, event: 'joined', args_json: JSON.stringify([k]) });
      await c.nextEvent('joined', (a) => a[0] === k);
      const { sockets } = await timed('FetchSockets', () => api.fetchSockets({ target: { socket_ids: [c.id] } }));
      assert.deepEqual(sockets.map((s) => s.id), [c.id]);
      assert.ok(sockets[0].rooms.includes(`${room}-${k}`), 'the join was applied before the call returned');
    }
    const res = await timed('DisconnectSockets', () => apis[1].disconnectSockets({ target: { socket_ids: [c.id] } }));
    assert.equal(res.disconnected, 1);
    await waitFor(() => !c.socket.connected, 5000, 'the socket to be disconnected');
    t.diagnostic(`latency (ms) with ${stopped.nodeId} stopped: ${JSON.stringify(timings)}`);
  });
});
