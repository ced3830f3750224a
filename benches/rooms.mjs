// Emit to many rooms, for BENCHMARKS.md: the CPU an `Emit` naming N rooms costs
// the control plane and the edges (and the NATS bytes it makes), at N = 1k, 10k
// and 100k, for this build and, in the same run, a base build (--base-bin).
//
// Each target is started once per build: `standalone` (one process), and a
// cluster of one nats-server, 2 edges and a control plane. Each edge holds one
// socket that joined `--members` rooms spread evenly over r0…r(max N - 1) (r0
// among them), so every emit reaches every socket through the copies of the
// rooms it is in: N/max × members of them. The figure is per emit: CPU seconds
// of each process (utime + stime from /proc/<pid>/stat), NATS bytes in (from
// the server's /varz), and whether each socket got each emit exactly once.
//
//   node benches/rooms.mjs                                   # this build only
//   node benches/rooms.mjs --base-bin /path/to/old/roomcast  # and a base build
//
// Options: --sizes (1000,10000,100000), --emits (per size; 10), --members (1000),
// --base-max (largest N given to the base build; 10000: a base whose cost is
// quadratic would take hours at 100k), --targets (standalone,cluster), --out.
//
// Needs ROOMCAST_BIN (a release build for published figures), NATS_SERVER_BIN,
// and tests/e2e/node_modules (`npm ci` there): it uses the e2e test library.
// Writes rooms.json and rooms.md into --out (default benches/results/rooms).

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  REPO_ROOT,
  SocketPool,
  binaryPath,
  claims,
  createRoomcastClient,
  signHs256,
  startCluster,
  startStandalone,
  waitFor,
} from '../tests/e2e/lib/index.mjs';

const { values: opt } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000,100000' },
    emits: { type: 'string', default: '10' },
    members: { type: 'string', default: '1000' },
    'base-bin': { type: 'string' },
    'base-max': { type: 'string', default: '10000' },
    targets: { type: 'string', default: 'standalone,cluster' },
    out: { type: 'string', default: path.join(REPO_ROOT, 'benches', 'results', 'rooms') },
  },
});
const SIZES = opt.sizes.split(',').map(Number).filter(Boolean);
const MAX = Math.max(...SIZES);
const EMITS = Number(opt.emits);
const MEMBERS = Math.min(Number(opt.members), MAX);
const BASE_MAX = Number(opt['base-max']);
const TARGETS = opt.targets.split(',').filter(Boolean);
const SECRET = 'bench-rooms-hs256-secret-0123456789abcdef';
const CLK_TCK = 100;
// Room names every build accepts, and selectors of any size here.
const LIMITS = ['--max-selector-size', String(MAX), '--max-rooms-per-socket', '0'];

const log = (msg) => process.stderr.write(`rooms: ${msg}\n`);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const round = (x, d = 4) => (x == null ? null : Number(x.toFixed(d)));
const room = (i) => `r${i}`;

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** The processes of a target by role, and the nats-server (if any). */
async function start(kind) {
  if (kind === 'standalone') {
    const server = await startStandalone(['--jwt-secret', SECRET, ...LIMITS]);
    return {
      server,
      roles: { standalone: [server.proc.pid] },
      httpUrls: [server.httpUrl],
      grpcAddr: server.grpcAddr,
      natsBytes: async () => 0,
    };
  }
  const cluster = await startCluster({
    natsNodes: 1,
    edges: 2,
    controls: 1,
    edgeArgs: ['--jwt-secret', SECRET, '--max-rooms-per-socket', '0'],
    controlArgs: ['--max-selector-size', String(MAX), '--request-timeout-ms', '60000'],
  });
  const nats = cluster.nats.servers[0];
  return {
    server: cluster,
    roles: {
      control: cluster.controls.map((c) => c.proc.pid),
      edges: cluster.edges.map((e) => e.proc.pid),
      nats: [nats.child.pid],
    },
    httpUrls: cluster.httpUrls,
    grpcAddr: cluster.grpcAddr,
    natsBytes: async () => (await nats.monitor('/varz')).in_bytes,
  };
}

function cpuByRole(roles) {
  return Object.fromEntries(Object.entries(roles).map(([k, pids]) => [k, sum(pids.map(cpuSeconds))]));
}

/** One build on one target: every size, `EMITS` emits each. */
async function measure(name, bin, kind, maxSize) {
  process.env.ROOMCAST_BIN = bin;
  const t = await start(kind);
  const api = createRoomcastClient(t.grpcAddr, { deadlineMs: 600_000 });
  const pool = new SocketPool(t.httpUrls);
  const rows = [];
  try {
    const step = Math.max(1, Math.floor(MAX / MEMBERS));
    const joined = Array.from({ length: MEMBERS }, (_, k) => room(k * step));
    const sockets = [];
    for (let edge = 0; edge < t.httpUrls.length; edge++) {
      const c = await pool.connectAt(edge, '/', { auth: { token: signHs256(claims(`u${edge}`), SECRET) } });
      for (let i = 0; i < joined.length; i += 1000) {
        await api.joinRooms({ target: { socket_ids: [c.id] }, rooms: joined.slice(i, i + 1000) });
      }
      sockets.push(c);
    }
    for (const n of SIZES.filter((s) => s <= maxSize)) {
      const rooms = Array.from({ length: n }, (_, i) => room(i));
      const event = `e${n}`;
      const cpu0 = cpuByRole(t.roles);
      const bytes0 = await t.natsBytes();
      const t0 = performance.now();
      for (let i = 0; i < EMITS; i++) await api.emit({ to: { rooms }, event, args_json: `[${i}]` });
      await waitFor(() => sockets.every((c) => c.count(event) >= EMITS), 600_000, `${EMITS} emits to ${n} rooms`);
      const wallMs = performance.now() - t0;
      // Late duplicates would come within this.
      await new Promise((r) => setTimeout(r, 300));
      const cpu1 = cpuByRole(t.roles);
      const bytes1 = await t.natsBytes();
      const perEmit = Object.fromEntries(Object.keys(cpu1).map((k) => [k, round((cpu1[k] - cpu0[k]) / EMITS)]));
      const received = sockets.map((c) => c.count(event));
      const row = {
        rooms: n,
        cpuPerEmitS: perEmit,
        natsBytesPerEmit: Math.round((bytes1 - bytes0) / EMITS),
        wallPerEmitMs: round(wallMs / EMITS, 1),
        exactlyOnce: received.every((r) => r === EMITS),
        received,
      };
      log(`${name} ${kind} ${n} rooms: ${JSON.stringify(row)}`);
      rows.push(row);
    }
  } finally {
    pool.closeAll();
    await t.server.stop();
  }
  return rows;
}

const builds = [['this', binaryPath(), MAX]];
if (opt['base-bin']) builds.push(['base', opt['base-bin'], BASE_MAX]);
const results = { sizes: SIZES, emits: EMITS, members: MEMBERS, builds: {} };
for (const kind of TARGETS) {
  for (const [name, bin, maxSize] of builds) {
    results.builds[name] ??= { bin, targets: {} };
    results.builds[name].targets[kind] = await measure(name, bin, kind, maxSize);
  }
}

const md = [];
md.push(`Emits of ${EMITS} per size; each edge holds one socket in ${MEMBERS} rooms spread over r0…r${MAX - 1}.`);
md.push('CPU seconds per emit by process (control plane, edges, nats-server; standalone: its one process), NATS bytes in per emit.');
md.push('');
md.push('| target | rooms | build | CPU/emit | NATS bytes/emit | wall/emit ms | exactly once |');
md.push('|---|---:|---|---|---:|---:|---|');
for (const kind of TARGETS) {
  for (const n of SIZES) {
    for (const [name] of builds) {
      const row = results.builds[name].targets[kind]?.find((r) => r.rooms === n);
      if (!row) {
        md.push(`| ${kind} | ${n} | ${name} | not run | | | |`);
        continue;
      }
      const cpu = Object.entries(row.cpuPerEmitS).map(([k, v]) => `${k} ${v}`).join(', ');
      md.push(`| ${kind} | ${n} | ${name} | ${cpu} | ${row.natsBytesPerEmit} | ${row.wallPerEmitMs} | ${row.exactlyOnce ? 'yes' : `no: ${row.received}`} |`);
    }
  }
}
mkdirSync(opt.out, { recursive: true });
writeFileSync(path.join(opt.out, 'rooms.json'), `${JSON.stringify(results, null, 2)}\n`);
writeFileSync(path.join(opt.out, 'rooms.md'), `${md.join('\n')}\n`);
process.stdout.write(`${md.join('\n')}\n`);
process.exit(0);
