// Scale-out figures for BENCHMARKS.md: directory routing of commands against
// broadcast routing, in the same run and the same cluster. Each cluster has
// 3 nats-servers, N edges and 2 control planes: control-1 routes by directory
// (`--command-routing directory`), control-2 by broadcast; every figure is taken
// once through each and reported as a ratio directory ÷ broadcast.
//
//   (i)   edge bus messages received per user-targeted emit (a user with one
//         socket), at every size;
//   (ii)  JoinRooms / FetchSockets / DisconnectSockets for one socket: p50/p99
//         latency, then the same while one unrelated edge is stopped (SIGSTOP),
//         errors counted;
//   (iii) a notification burst at 16 edges (or the size given): one emit per
//         user to N connected users (each with one socket, held by
//         benches/scale-holder.mjs processes), total CPU of every process (edges, control planes,
//         nats-servers; utime + stime from /proc/<pid>/stat) while it is sent
//         and delivered.
//
//   node benches/scale.mjs                         # quick: 4 and 16 edges, 2,000-user burst
//   node benches/scale.mjs --sizes 4,16,32 --burst-users 100000 --out benches/results/scale
//
// Other options: --emits (per mode, for (i); 200), --calls (rounds of (ii) per
// mode; 50), --stopped-calls-broadcast (rounds of (ii) through the broadcast
// control plane while an edge is stopped, each waiting for the 2 s request
// timeout; 3), --burst-edges (16), --burst-repeat (measured bursts per mode,
// alternating which mode goes first, after an unmeasured warm-up; 2),
// --no-routing-flag (for a build without --command-routing: both control
// planes then route as that build does), --build (what to call the build in
// the report, e.g. "release build of <commit>").
//
// Needs ROOMCAST_BIN (a release build for published figures), NATS_SERVER_BIN,
// and tests/e2e/node_modules (`npm ci` there): it uses the e2e test library.
// Writes scale.json and scale.md into --out (default benches/results/scale).

import { fork } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  REPO_ROOT,
  SocketPool,
  claims,
  createRoomcastClient,
  fetchMetrics,
  readyzStatus,
  signHs256,
  startCluster,
  trackChild,
  stopChild,
  waitFor,
} from '../tests/e2e/lib/index.mjs';

const { values: opt } = parseArgs({
  options: {
    sizes: { type: 'string', default: '4,16' },
    emits: { type: 'string', default: '200' },
    calls: { type: 'string', default: '50' },
    'stopped-calls-broadcast': { type: 'string', default: '3' },
    'burst-edges': { type: 'string', default: '16' },
    'burst-users': { type: 'string', default: '2000' },
    'burst-repeat': { type: 'string', default: '2' },
    out: { type: 'string', default: path.join(REPO_ROOT, 'benches', 'results', 'scale') },
    'no-routing-flag': { type: 'boolean', default: false },
    build: { type: 'string', default: '' },
  },
});
const SIZES = opt.sizes.split(',').map(Number).filter(Boolean);
const EMITS = Number(opt.emits);
const CALLS = Number(opt.calls);
// With broadcast routing each call during the stop waits for the request
// timeout; a few show it.
const STOPPED_CALLS_BROADCAST = Number(opt['stopped-calls-broadcast']);
const BURST_EDGES = Number(opt['burst-edges']);
const BURST_USERS = Number(opt['burst-users']);
const BURST_REPEAT = Math.max(1, Number(opt['burst-repeat']));

const SECRET = 'bench-scale-hs256-secret-0123456789abcdef';
const REQUEST_TIMEOUT_MS = 2000;
// A stopped edge stays "live" for the control planes during a whole stopped phase.
const CONTROL_ARGS = ['--edge-ttl-ms', '30000', '--request-timeout-ms', String(REQUEST_TIMEOUT_MS)];
const MODES = ['directory', 'broadcast'];
const EMIT_SERIES = 'roomcast_edge_bus_messages_total{op="emit"}';
const DELIVERIES = 'roomcast_edge_deliveries_total';
// Where the directory control plane found users' sockets (builds with a
// watched user directory, ADR 0019; absent before: 0).
const LOOKUPS = (source) => `roomcast_control_user_lookups_total{source="${source}"}`;
const CLK_TCK = 100;

const asUser = (sub) => ({ auth: { token: signHs256(claims(sub), SECRET) } });
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const pct = (xs, p) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const round = (x, d = 2) => (x == null ? null : Number(x.toFixed(d)));
const log = (msg) => process.stderr.write(`scale: ${msg}\n`);

/** Sum of a series (every labelled variant whose name starts with `prefix`) over processes. */
async function total(handles, series, { prefix = false } = {}) {
  const all = await Promise.all(
    handles.map(async (h) => {
      const m = await fetchMetrics(h.adminUrl);
      if (!prefix) return m.get(series) ?? 0;
      let s = 0;
      for (const [k, v] of m) if (k === series || k.startsWith(`${series}{`)) s += v;
      return s;
    }),
  );
  return sum(all);
}

/** utime + stime of `pid`, in seconds. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function clusterPids(cluster) {
  return {
    edges: cluster.edges.map((e) => e.proc.pid),
    controls: cluster.controls.map((c) => c.proc.pid),
    nats: cluster.nats.servers.map((s) => s.child.pid),
  };
}

function cpuOf(pids) {
  return Object.fromEntries(Object.entries(pids).map(([k, ps]) => [k, sum(ps.map(cpuSeconds))]));
}

async function startScaleCluster(edges) {
  const routing = (mode) => (opt['no-routing-flag'] ? [] : ['--command-routing', mode]);
  const started = Date.now();
  const cluster = await startCluster({
    natsNodes: 3,
    edges,
    controls: 2,
    edgeArgs: ['--jwt-secret', SECRET],
    controlArgs: CONTROL_ARGS,
    perControlArgs: MODES.map(routing),
  });
  log(`${edges} edges, 2 control planes, 3 nats-servers started in ${Date.now() - started} ms`);
  const apis = Object.fromEntries(
    MODES.map((mode, i) => [mode, createRoomcastClient(cluster.grpcAddrs[i], { deadlineMs: 10_000 })]),
  );
  return { cluster, apis };
}

/** (i): edge bus messages per user-targeted emit, per mode. */
async function messagesPerEmit(cluster, apis, pool) {
  const user = `msgs-${cluster.edges.length}`;
  const c = await pool.connectAt(1, '/', asUser(user));
  const out = {};
  for (const mode of MODES) {
    const to = { user_ids: [user] };
    await apis[mode].emit({ to, event: `warm-${mode}`, args_json: '[0]' });
    await c.nextEvent(`warm-${mode}`);
    const before = await total(cluster.edges, EMIT_SERIES);
    for (let i = 0; i < EMITS; i++) await apis[mode].emit({ to, event: mode, args_json: '[1]' });
    await waitFor(() => c.count(mode) === EMITS, 30_000, `${EMITS} ${mode} emits delivered`);
    out[mode] = ((await total(cluster.edges, EMIT_SERIES)) - before) / EMITS;
  }
  c.socket.close();
  return out;
}

/**
 * (ii): `n` rounds of connect → JoinRooms → FetchSockets → DisconnectSockets for
 * one socket on edge 1, through `api`; each call timed, errors counted by code.
 */
async function perSocketCalls(api, pool, n, tag) {
  const ms = { join: [], fetch: [], disconnect: [] };
  const errors = { join: 0, fetch: 0, disconnect: 0 };
  const codes = new Set();
  const timed = async (name, call) => {
    const t0 = performance.now();
    try {
      await call();
    } catch (err) {
      errors[name]++;
      codes.add(err.code);
    }
    ms[name].push(performance.now() - t0);
  };
  for (let i = 0; i < n; i++) {
    const c = await pool.connectAt(1, '/', asUser(`${tag}-${i}`));
    const target = { socket_ids: [c.id] };
    await timed('join', () => api.joinRooms({ target, rooms: [`${tag}-${i}`] }));
    await timed('fetch', async () => {
      const { sockets } = await api.fetchSockets({ target });
      if (sockets.length !== 1) throw Object.assign(new Error('socket not listed'), { code: 'missing' });
    });
    await timed('disconnect', async () => {
      const { disconnected } = await api.disconnectSockets({ target });
      if (disconnected !== 1) throw Object.assign(new Error('not disconnected'), { code: 'missing' });
    });
    c.socket.close();
  }
  const summary = {};
  for (const name of Object.keys(ms)) {
    summary[name] = { p50: round(pct(ms[name], 50), 1), p99: round(pct(ms[name], 99), 1), calls: n, errors: errors[name] };
  }
  summary.codes = [...codes];
  return summary;
}

async function latencies(cluster, apis, pool) {
  const edges = cluster.edges.length;
  const out = { healthy: {}, stopped: {} };
  for (const mode of MODES) out.healthy[mode] = await perSocketCalls(apis[mode], pool, CALLS, `h-${edges}-${mode}`);
  const stopped = cluster.edges[edges - 1];
  const proc = stopped.proc;
  for (const mode of MODES) {
    proc.kill('SIGSTOP');
    try {
      const n = mode === 'broadcast' ? STOPPED_CALLS_BROADCAST : CALLS;
      out.stopped[mode] = await perSocketCalls(apis[mode], pool, n, `s-${edges}-${mode}`);
    } finally {
      proc.kill('SIGCONT');
    }
    await waitFor(async () => (await readyzStatus(stopped.adminUrl)) === 200, 30_000, `${stopped.nodeId} ready`, 100);
  }
  return out;
}

/**
 * Holds `users` idle sockets (users u0 … u{users-1}, one socket each) in
 * forked benches/scale-holder.mjs processes of at most HOLDER_SOCKETS each (one
 * process may not open more files than `ulimit -n`); resolves once all are
 * connected.
 */
const HOLDER_SOCKETS = 15_000;
async function holdSockets(cluster, users) {
  const holders = [];
  const stop = () =>
    Promise.all(holders.map(({ child, exited }) => stopChild(child, exited, 10_000, 'scale-holder')));
  try {
    const reports = [];
    for (let offset = 0; offset < users; offset += HOLDER_SOCKETS) {
      const count = Math.min(HOLDER_SOCKETS, users - offset);
      const child = fork(
        path.join(REPO_ROOT, 'benches', 'scale-holder.mjs'),
        [JSON.stringify({ urls: cluster.httpUrls, offset, count, secret: SECRET })],
        { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
      );
      const exited = trackChild(child);
      holders.push({ child, exited });
      // One holder at a time: the edges take the connects (and their presence
      // records) at the rate they can.
      const report = await Promise.race([
        new Promise((resolve) => child.once('message', resolve)),
        exited.then((r) => Promise.reject(new Error(`scale-holder exited: ${JSON.stringify(r)}`))),
      ]);
      if (report.failed) throw new Error(`${report.failed} of ${count} sockets failed to connect: ${report.firstError}`);
      reports.push(report);
      log(`${offset + count}/${users} sockets connected`);
    }
    await waitFor(
      async () => (await total(cluster.edges, 'roomcast_edge_sockets', { prefix: true })) >= users,
      60_000,
      `the edges to count ${users} sockets`,
      500,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { stop };
}

/** (iii): one emit per user to `users` users, per mode: CPU of every process. */
async function burst(users) {
  const { cluster, apis } = await startScaleCluster(BURST_EDGES);
  let held;
  let burstApis = {};
  try {
    held = await holdSockets(cluster, users);
    burstApis = Object.fromEntries(
      MODES.map((mode, i) => [mode, createRoomcastClient(cluster.grpcAddrs[i], { deadlineMs: 600_000 })]),
    );
    const pids = clusterPids(cluster);
    // Let presence writes and subscriptions settle before measuring.
    let last = sum(Object.values(cpuOf(pids)));
    await waitFor(
      async () => {
        await new Promise((r) => setTimeout(r, 1000));
        const now = sum(Object.values(cpuOf(pids)));
        const quiet = now - last < 0.3;
        last = now;
        return quiet;
      },
      300_000,
      'the cluster to go quiet after the connects',
      0,
    );
    // One pass per mode: users u0 … u{n-1}, one emit each, through that mode's
    // control plane; CPU of every process from the first send to the last
    // delivery.
    const pass = async (mode, n) => {
      const deliveredBefore = await total(cluster.edges, DELIVERIES, { prefix: true });
      const msgsBefore = await total(cluster.edges, EMIT_SERIES);
      const control = [cluster.controls[MODES.indexOf(mode)]];
      const lookupsOf = async () =>
        Object.fromEntries(await Promise.all(['directory', 'store'].map(async (k) => [k, await total(control, LOOKUPS(k))])));
      const lookupsBefore = await lookupsOf();
      const cpuBefore = cpuOf(pids);
      const t0 = performance.now();
      // EmitStream handles its messages one after another: many short streams
      // at once keep the control plane busy. Not more than 16: grpc-js sends
      // each message as a small DATA frame, and with 32 or more streams (debug
      // build; 200 with release) the messages the server has not read yet
      // exhaust h2's budget for small DATA frames, and it closes the
      // connection (GOAWAY ENHANCE_YOUR_CALM; RESOURCE_EXHAUSTED here).
      const BATCH = 100;
      const inFlight = [];
      for (let i = 0; i < n; i += BATCH) {
        const requests = [];
        for (let u = i; u < Math.min(n, i + BATCH); u++) {
          requests.push({ to: { user_ids: [`u${u}`] }, event: 'notify', args_json: `[${u}]` });
        }
        inFlight.push(burstApis[mode].emitStream(requests));
        if (inFlight.length >= 16) await inFlight.shift();
      }
      await Promise.all(inFlight);
      await waitFor(
        async () => (await total(cluster.edges, DELIVERIES, { prefix: true })) - deliveredBefore >= n,
        600_000,
        `${n} ${mode} notifications delivered`,
        200,
      );
      const seconds = (performance.now() - t0) / 1000;
      const cpuAfter = cpuOf(pids);
      const cpu = Object.fromEntries(Object.keys(cpuAfter).map((k) => [k, cpuAfter[k] - cpuBefore[k]]));
      const lookupsAfter = await lookupsOf();
      return {
        userLookups: Object.fromEntries(Object.keys(lookupsAfter).map((k) => [k, lookupsAfter[k] - lookupsBefore[k]])),
        seconds,
        cpu,
        cpuTotal: sum(Object.values(cpu)),
        edgeMessages: (await total(cluster.edges, EMIT_SERIES)) - msgsBefore,
        delivered: (await total(cluster.edges, DELIVERIES, { prefix: true })) - deliveredBefore,
      };
    };
    // Warm-up (not measured): connections to the control planes, the gRPC
    // streams, the first presence reads.
    for (const mode of MODES) await pass(mode, Math.min(users, 500));
    const runs = { directory: [], broadcast: [] };
    for (let r = 0; r < BURST_REPEAT; r++) {
      // Alternate which mode goes first.
      for (const mode of r % 2 ? [...MODES].reverse() : MODES) {
        const run = await pass(mode, users);
        log(`burst ${mode} #${r + 1}: ${JSON.stringify(run)}`);
        runs[mode].push(run);
      }
    }
    const mean = (xs) => sum(xs) / xs.length;
    const out = {};
    for (const mode of MODES) {
      const rs = runs[mode];
      out[mode] = {
        users,
        repeats: rs.length,
        seconds: round(mean(rs.map((x) => x.seconds))),
        cpu: Object.fromEntries(Object.keys(rs[0].cpu).map((k) => [k, round(mean(rs.map((x) => x.cpu[k])))])),
        cpuTotal: round(mean(rs.map((x) => x.cpuTotal))),
        edgeMessages: round(mean(rs.map((x) => x.edgeMessages)), 0),
        delivered: round(mean(rs.map((x) => x.delivered)), 0),
        userLookups: Object.fromEntries(
          Object.keys(rs[0].userLookups).map((k) => [k, round(mean(rs.map((x) => x.userLookups[k])), 0)]),
        ),
        runs: rs.map((x) => ({ ...x, cpuTotal: round(x.cpuTotal), seconds: round(x.seconds) })),
      };
    }
    return out;
  } finally {
    await held?.stop();
    for (const api of [...Object.values(apis), ...Object.values(burstApis)]) api.close();
    await cluster.stop();
  }
}

async function atSize(edges) {
  const { cluster, apis } = await startScaleCluster(edges);
  const pool = new SocketPool(cluster.httpUrls);
  try {
    const msgs = await messagesPerEmit(cluster, apis, pool);
    log(`${edges} edges: messages per user emit ${JSON.stringify(msgs)}`);
    const lat = await latencies(cluster, apis, pool);
    log(`${edges} edges: ${JSON.stringify(lat)}`);
    return { edges, messagesPerUserEmit: msgs, ...lat };
  } finally {
    pool.closeAll();
    for (const edge of cluster.edges) if (edge.proc.exitCode === null) edge.proc.kill('SIGCONT');
    for (const api of Object.values(apis)) api.close();
    await cluster.stop();
  }
}

const ratio = (a, b) => (a == null || b == null || b === 0 ? null : round(a / b, 3));

function markdown(result) {
  const lines = [];
  lines.push('| edges | bus msgs per user emit: directory | broadcast | ratio |');
  lines.push('|---|---|---|---|');
  for (const r of result.sizes) {
    const m = r.messagesPerUserEmit;
    lines.push(`| ${r.edges} | ${round(m.directory)} | ${round(m.broadcast)} | ${ratio(m.directory, m.broadcast)} |`);
  }
  lines.push('');
  lines.push('| edges | call | edge stopped | directory p50 / p99 ms (errors) | broadcast p50 / p99 ms (errors) | p50 ratio | p99 ratio |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const r of result.sizes) {
    for (const phase of ['healthy', 'stopped']) {
      for (const call of ['join', 'fetch', 'disconnect']) {
        const d = r[phase].directory[call];
        const b = r[phase].broadcast[call];
        const cell = (x) => `${x.p50} / ${x.p99} (${x.errors}/${x.calls})`;
        lines.push(
          `| ${r.edges} | ${{ join: 'JoinRooms', fetch: 'FetchSockets', disconnect: 'DisconnectSockets' }[call]} | ${phase === 'stopped' ? 'yes' : 'no'} | ${cell(d)} | ${cell(b)} | ${ratio(d.p50, b.p50)} | ${ratio(d.p99, b.p99)} |`,
        );
      }
    }
  }
  if (result.burst) {
    const d = result.burst.directory;
    const b = result.burst.broadcast;
    lines.push('');
    lines.push(`Notification burst, ${BURST_EDGES} edges, ${d.users} users (one emit each), mean of ${d.repeats} runs per mode:`);
    lines.push('');
    lines.push('| | directory | broadcast | ratio |');
    lines.push('|---|---|---|---|');
    lines.push(`| CPU, all processes (s) | ${d.cpuTotal} | ${b.cpuTotal} | ${ratio(d.cpuTotal, b.cpuTotal)} |`);
    for (const k of ['edges', 'controls', 'nats']) lines.push(`| CPU, ${k} (s) | ${d.cpu[k]} | ${b.cpu[k]} | ${ratio(d.cpu[k], b.cpu[k])} |`);
    lines.push(`| edge bus messages | ${d.edgeMessages} | ${b.edgeMessages} | ${ratio(d.edgeMessages, b.edgeMessages)} |`);
    lines.push(`| deliveries | ${d.delivered} | ${b.delivered} | |`);
    for (const k of ['directory', 'store']) lines.push(`| user lookups answered by the ${k} | ${d.userLookups[k]} | ${b.userLookups[k]} | |`);
    lines.push(`| wall time, send to last delivery (s) | ${d.seconds} | ${b.seconds} | ${ratio(d.seconds, b.seconds)} |`);
  }
  return lines.join('\n');
}

const result = {
  build: opt.build || undefined,
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memGiB: round(os.totalmem() / 2 ** 30, 1) },
  started: new Date().toISOString(),
  loadavgStart: os.loadavg(),
  settings: { sizes: SIZES, emits: EMITS, calls: CALLS, stoppedCallsBroadcast: STOPPED_CALLS_BROADCAST, requestTimeoutMs: REQUEST_TIMEOUT_MS, burstEdges: BURST_EDGES, burstUsers: BURST_USERS, burstRepeat: BURST_REPEAT },
  sizes: [],
};
for (const edges of SIZES) result.sizes.push(await atSize(edges));
if (BURST_USERS > 0) result.burst = await burst(BURST_USERS);
result.loadavgEnd = os.loadavg();
mkdirSync(opt.out, { recursive: true });
writeFileSync(path.join(opt.out, 'scale.json'), `${JSON.stringify(result, null, 2)}\n`);
const md = markdown(result);
writeFileSync(path.join(opt.out, 'scale.md'), `${md}\n`);
console.log(md);
