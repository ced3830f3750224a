// Long-polling without sticky sessions, for BENCHMARKS.md: what forwarding a
// session's requests to the edge that holds it costs (ADR 0020), against the
// same clients reaching that edge directly, in the same run.
//
// One cluster (one nats-server, 3 edges, a control plane). For each mode,
// `--clients` socket.io-client sockets join one room, then `--emits` emits go to
// that room at `--rate` a second, each carrying its send time. Modes:
//   polling-direct     transports: ["polling"], every request to the session's edge
//   polling-forwarded  the same through a balancer that sends each request of a
//                      session to another edge than its last one (forwarded)
//   upgrade-direct     the default polling → WebSocket upgrade, on the session's edge
//   upgrade-relayed    the upgrade through that balancer: the WebSocket lands on
//                      another edge, which relays it
// Reported per mode: delivered fraction, latency p50/p99 (send → received),
// server CPU per delivery (utime + stime of every roomcast process and
// nats-server, from /proc), and the requests the edges forwarded.
//
//   ROOMCAST_BIN=target/release/roomcast node benches/polling.mjs
//
// Options: --clients (200), --emits (300), --rate (50), --modes, --out.
// Needs NATS_SERVER_BIN and tests/e2e/node_modules (it uses the e2e library).
// Writes polling.json and polling.md into --out (default benches/results/polling).

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startRequestBalancer } from '../tests/e2e/lib/balancer.mjs';
import {
  REPO_ROOT,
  SocketPool,
  binaryPath,
  claims,
  createRoomcastClient,
  fetchMetrics,
  signHs256,
  startCluster,
  waitFor,
} from '../tests/e2e/lib/index.mjs';

const { values: opt } = parseArgs({
  options: {
    clients: { type: 'string', default: '200' },
    emits: { type: 'string', default: '300' },
    rate: { type: 'string', default: '50' },
    modes: { type: 'string', default: 'polling-direct,polling-forwarded,upgrade-direct,upgrade-relayed' },
    out: { type: 'string', default: path.join(REPO_ROOT, 'benches', 'results', 'polling') },
  },
});
const CLIENTS = Number(opt.clients);
const EMITS = Number(opt.emits);
const RATE = Number(opt.rate);
const MODES = opt.modes.split(',').filter(Boolean);
const SECRET = 'bench-polling-hs256-secret-0123456789abcdef';
const CLK_TCK = 100;

const log = (msg) => process.stderr.write(`polling: ${msg}\n`);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const round = (x, d = 2) => (x == null ? null : Number(x.toFixed(d)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function forwarded(cluster) {
  let n = 0;
  for (const e of cluster.edges) {
    for (const [series, v] of await fetchMetrics(e.adminUrl)) {
      if (series.startsWith('roomcast_edge_forwarded_requests_total{')) n += v;
    }
  }
  return n;
}

async function runMode(mode, cluster, balancer, api, pids) {
  const urls = mode.endsWith('direct') ? cluster.httpUrls : balancer.urls;
  const transports = mode.startsWith('polling') ? ['polling'] : ['polling', 'websocket'];
  const pool = new SocketPool(urls);
  const latencies = [];
  const seen = new Set();
  let duplicates = 0;
  try {
    const clients = [];
    for (let i = 0; i < CLIENTS; i++) {
      const c = pool.open('/', { transports, auth: { token: signHs256(claims(`${mode}-${i}`), SECRET) } });
      c.upgraded = transports.length === 1 ? Promise.resolve() : new Promise((r) => c.socket.io.engine.once('upgrade', r));
      c.socket.on('tick', ({ n, at }) => {
        const key = `${i}:${n}`;
        if (seen.has(key)) duplicates += 1;
        seen.add(key);
        latencies.push(Date.now() - at);
      });
      clients.push(c);
    }
    await waitFor(() => clients.every((c) => c.socket.connected), 60_000, 'every client to connect');
    await Promise.all(clients.map((c) => c.upgraded));
    for (let i = 0; i < clients.length; i += 500) {
      await api.joinRooms({ target: { socket_ids: clients.slice(i, i + 500).map((c) => c.id) }, rooms: ['bench'] });
    }
    await sleep(500);
    const fwd0 = await forwarded(cluster);
    const cpu0 = sum(pids.map(cpuSeconds));
    const started = Date.now();
    for (let n = 0; n < EMITS; n++) {
      const due = started + (n * 1000) / RATE;
      if (due > Date.now()) await sleep(due - Date.now());
      await api.emit({ to: { rooms: ['bench'] }, event: 'tick', args_json: JSON.stringify([{ n, at: Date.now() }]) });
    }
    await waitFor(() => seen.size >= CLIENTS * EMITS, 30_000, 'every delivery').catch(() => {});
    const cpu = sum(pids.map(cpuSeconds)) - cpu0;
    const fwd = (await forwarded(cluster)) - fwd0;
    const sorted = latencies.slice().sort((a, b) => a - b);
    const deliveries = seen.size;
    return {
      mode,
      clients: CLIENTS,
      emits: EMITS,
      delivered: round(deliveries / (CLIENTS * EMITS), 4),
      duplicates,
      p50_ms: percentile(sorted, 50),
      p99_ms: percentile(sorted, 99),
      cpu_s: round(cpu, 2),
      cpu_us_per_delivery: round((cpu / Math.max(1, deliveries)) * 1e6, 1),
      forwarded_requests: fwd,
    };
  } finally {
    pool.closeAll();
    await sleep(1000);
  }
}

async function main() {
  log(`binary ${binaryPath()}`);
  const cluster = await startCluster({
    natsNodes: 1,
    edges: 3,
    controls: 1,
    edgeArgs: ['--jwt-secret', SECRET],
  });
  const balancer = await startRequestBalancer(cluster.httpUrls);
  const api = createRoomcastClient(cluster.grpcAddr, { deadlineMs: 60_000 });
  const pids = [
    ...cluster.edges.map((e) => e.proc.pid),
    ...cluster.controls.map((c) => c.proc.pid),
    ...cluster.nats.servers.map((s) => s.child.pid),
  ];
  const rows = [];
  try {
    for (const mode of MODES) {
      log(`${mode}: ${CLIENTS} clients, ${EMITS} emits at ${RATE}/s`);
      const row = await runMode(mode, cluster, balancer, api, pids);
      log(JSON.stringify(row));
      rows.push(row);
    }
  } finally {
    api.close();
    await balancer.stop();
    await cluster.stop();
  }
  const byMode = Object.fromEntries(rows.map((r) => [r.mode, r]));
  const ratio = (a, b, k) => (byMode[a] && byMode[b] && byMode[b][k] ? round(byMode[a][k] / byMode[b][k], 2) : null);
  const ratios = {
    polling_cpu: ratio('polling-forwarded', 'polling-direct', 'cpu_us_per_delivery'),
    polling_p50: ratio('polling-forwarded', 'polling-direct', 'p50_ms'),
    polling_p99: ratio('polling-forwarded', 'polling-direct', 'p99_ms'),
    upgrade_cpu: ratio('upgrade-relayed', 'upgrade-direct', 'cpu_us_per_delivery'),
    upgrade_p50: ratio('upgrade-relayed', 'upgrade-direct', 'p50_ms'),
    upgrade_p99: ratio('upgrade-relayed', 'upgrade-direct', 'p99_ms'),
  };
  mkdirSync(opt.out, { recursive: true });
  const result = { at: new Date().toISOString(), clients: CLIENTS, emits: EMITS, rate: RATE, rows, ratios };
  writeFileSync(path.join(opt.out, 'polling.json'), `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    `| mode | delivered | duplicates | p50 ms | p99 ms | server CPU µs / delivery | forwarded requests |`,
    `|---|---|---|---|---|---|---|`,
    ...rows.map((r) => `| ${r.mode} | ${(r.delivered * 100).toFixed(2)}% | ${r.duplicates} | ${r.p50_ms} | ${r.p99_ms} | ${r.cpu_us_per_delivery} | ${r.forwarded_requests} |`),
    '',
    `Ratios (forwarded / direct): polling CPU ${ratios.polling_cpu}×, p50 ${ratios.polling_p50}×, p99 ${ratios.polling_p99}×; ` +
      `upgrade CPU ${ratios.upgrade_cpu}×, p50 ${ratios.upgrade_p50}×, p99 ${ratios.upgrade_p99}×.`,
    '',
  ].join('\n');
  writeFileSync(path.join(opt.out, 'polling.md'), md);
  process.stdout.write(md);
}

await main();
