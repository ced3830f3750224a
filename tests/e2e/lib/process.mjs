// Starts roomcast processes (`standalone`, `edge`, `control`) as children on
// 127.0.0.1:0 ports and hands back their addresses, parsed from the one line each
// prints on stdout when it listens:
//   roomcast listening http=127.0.0.1:PORT grpc=127.0.0.1:PORT admin=127.0.0.1:PORT
//   roomcast listening http=ADDR admin=ADDR node=ID          (edge)
//   roomcast listening grpc=ADDR admin=ADDR node=ID          (control)
// The line is read as space-separated key=value pairs; unknown keys are kept.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { waitFor, withTimeout } from './wait.mjs';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The binary under test: `$ROOMCAST_BIN`, else `<repo>/target/debug/roomcast`. */
export function binaryPath() {
  return process.env.ROOMCAST_BIN || path.join(REPO_ROOT, 'target', 'debug', 'roomcast');
}

const READY_PREFIX = 'roomcast listening ';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const STDERR_TAIL_LINES = 200;

/** The flag that sets the address of each listener a ready line can report. */
const LISTEN_FLAGS = { http: '--listen', grpc: '--grpc-listen', admin: '--admin-listen' };

/**
 * `roomcast listening http=A grpc=B` → `{ http: 'A', grpc: 'B' }`; `null` for any
 * other line.
 */
export function parseReadyLine(line) {
  const trimmed = line.trim();
  if (!trimmed.startsWith(READY_PREFIX)) return null;
  const fields = {};
  for (const part of trimmed.slice(READY_PREFIX.length).split(/\s+/)) {
    const eq = part.indexOf('=');
    if (eq > 0) fields[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return fields;
}

// Children still running when the test process exits (a crash, a forgotten stop(),
// the test runner's timeout signal) are killed rather than left behind.
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});
// A signal ends the process without 'exit' handlers: exit explicitly so they run.
for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
  process.once(signal, () => process.exit(128 + number));
}

/**
 * Registers a spawned child to be killed if the test process exits first, and
 * returns a promise for its `{code, signal}` once it exits.
 */
export function trackChild(child) {
  running.add(child);
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
}

/** SIGTERM, then wait for the exit; SIGKILL (and reject) after `timeoutMs`. */
export async function stopChild(child, exited, timeoutMs = STOP_TIMEOUT_MS, what = `pid ${child.pid}`) {
  if (child.exitCode !== null || child.signalCode !== null) return exited;
  child.kill('SIGTERM');
  try {
    return await withTimeout(exited, timeoutMs, `${what} to exit after SIGTERM`);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
}

/** `GET url` over a fresh connection; resolves `{ status, body }` (body as text). */
export function httpGet(url, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs}ms`)));
    req.on('error', reject);
  });
}

/** The status of `GET <adminUrl>/readyz`, or 0 when the request fails. */
export async function readyzStatus(adminUrl) {
  try {
    return (await httpGet(`${adminUrl}/readyz`)).status;
  } catch {
    return 0;
  }
}

/** Waits until `GET <adminUrl>/readyz` answers 200. */
export function waitReady(adminUrl, timeoutMs = START_TIMEOUT_MS, what = adminUrl) {
  return waitFor(async () => (await readyzStatus(adminUrl)) === 200, timeoutMs, `${what} /readyz to answer 200`, 50);
}

/**
 * The samples of a Prometheus text exposition: `Map` of series (the metric name
 * with its labels as printed, e.g. `roomcast_edge_connections` or
 * `foo{a="b"}`) to its numeric value.
 */
export function parseMetrics(text) {
  const samples = new Map();
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    const m = /^(\S+?(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$/.exec(trimmed);
    if (m) samples.set(m[1], Number(m[2]));
  }
  return samples;
}

/** `GET <adminUrl>/metrics`, parsed with `parseMetrics`. */
export async function fetchMetrics(adminUrl) {
  const { status, body } = await httpGet(`${adminUrl}/metrics`);
  if (status !== 200) throw new Error(`GET ${adminUrl}/metrics answered ${status}`);
  return parseMetrics(body);
}

// Which flags a subcommand accepts, from its --help, asked once per subcommand.
const helpTexts = new Map();
function acceptsFlag(subcommand, flag) {
  if (!helpTexts.has(subcommand)) {
    const bin = binaryPath();
    const out = existsSync(bin) ? spawnSync(bin, [subcommand, '--help'], { encoding: 'utf8' }) : null;
    helpTexts.set(subcommand, out?.status === 0 ? out.stdout : '');
  }
  return new RegExp(`${flag}\\b`).test(helpTexts.get(subcommand));
}

function childEnv() {
  // The binary reads ROOMCAST_* variables as flags: don't let the caller's leak in.
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('ROOMCAST_')) delete env[key];
  }
  return env;
}

function portOf(addr) {
  return Number(addr.slice(addr.lastIndexOf(':') + 1));
}

/** Spawns one process and resolves once it printed its listening line. */
function spawnOnce(argv, label, stderrTail) {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    return Promise.reject(new Error(`roomcast binary not found at ${bin} (build it or set ROOMCAST_BIN)`));
  }
  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  const exited = trackChild(child);
  readline.createInterface({ input: child.stderr }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
    if (process.env.ROOMCAST_E2E_LOG) process.stderr.write(`[${label} ${child.pid}] ${line}\n`);
  });
  const ready = new Promise((resolve, reject) => {
    const extraStdout = [];
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const addrs = parseReadyLine(line);
      if (addrs) resolve(addrs);
      else extraStdout.push(line);
    });
    child.once('error', reject);
    exited.then(({ code, signal }) =>
      reject(
        new Error(
          `${label} exited (code ${code}, signal ${signal}) before printing its listening line` +
            `\nargs: ${argv.join(' ')}\nstdout: ${extraStdout.join('\n')}` +
            `\nstderr (tail):\n${stderrTail.slice(-30).join('\n')}`,
        ),
      ),
    );
  });
  return withTimeout(ready, START_TIMEOUT_MS, `${label} to print its listening line`)
    .then((addrs) => ({ child, exited, addrs }))
    .catch((err) => {
      child.kill('SIGKILL');
      throw err;
    });
}

/**
 * Starts `roomcast <subcommand>` with each listener of `listeners` (keys of the
 * ready line: `http`, `grpc`, `admin`) on `127.0.0.1:0`, followed by `args`. When
 * the process has an admin listener, also waits for its `/readyz` to answer 200.
 * Resolves to a handle:
 *   addrs     the ready line's fields, e.g. { http, grpc, admin, node }
 *   httpUrl   "http://127.0.0.1:PORT" (give it to socket.io-client), if it has http
 *   grpcAddr  "127.0.0.1:PORT", if it has grpc
 *   adminUrl  "http://127.0.0.1:PORT", if it has admin
 *   nodeId    the node id it reported, if any
 *   proc      the ChildProcess (changes after restart())
 *   stop()    SIGTERM, wait for exit (SIGKILL after a deadline); resolves {code, signal}
 *   kill()    SIGKILL (a crash: no cleanup, no goodbye), wait for exit; resolves {code, signal}
 *   restart() stop, then start again on the SAME ports with the same flags (after
 *             kill(), just the start)
 *   stderrTail() the last lines the process logged, for failure messages
 */
export async function startRoomcast(subcommand, { listeners, args = [], label = `roomcast ${subcommand}` }) {
  const stderrTail = [];
  const argvFor = (ports) => [
    subcommand,
    ...listeners.flatMap((key) => [LISTEN_FLAGS[key], `127.0.0.1:${ports[key] ?? 0}`]),
    ...args,
  ];
  const whenReady = async (started) => {
    if (started.addrs.admin) {
      await waitReady(`http://${started.addrs.admin}`, START_TIMEOUT_MS, label).catch((err) => {
        started.child.kill('SIGKILL');
        throw new Error(`${err.message}\nstderr (tail):\n${stderrTail.slice(-30).join('\n')}`);
      });
    }
    return started;
  };

  let current = await whenReady(await spawnOnce(argvFor({}), label, stderrTail));
  const ports = {};
  for (const key of listeners) {
    if (!current.addrs[key]) {
      current.child.kill('SIGKILL');
      throw new Error(`${label} did not report a ${key} address: ${JSON.stringify(current.addrs)}`);
    }
    ports[key] = portOf(current.addrs[key]);
  }
  const local = (key, scheme) =>
    ports[key] === undefined ? undefined : `${scheme}127.0.0.1:${ports[key]}`;

  const handle = {
    subcommand,
    ports,
    httpPort: ports.http,
    grpcPort: ports.grpc,
    httpUrl: local('http', 'http://'),
    grpcAddr: local('grpc', ''),
    adminUrl: local('admin', 'http://'),
    get addrs() {
      return current.addrs;
    },
    get nodeId() {
      return current.addrs.node;
    },
    get proc() {
      return current.child;
    },
    /** True while the process runs. */
    get alive() {
      return current.child.exitCode === null && current.child.signalCode === null;
    },
    stderrTail: () => stderrTail.join('\n'),
    stop: (timeoutMs = STOP_TIMEOUT_MS) =>
      stopChild(current.child, current.exited, timeoutMs, `${label} (pid ${current.child.pid})`),
    kill() {
      if (handle.alive) current.child.kill('SIGKILL');
      return current.exited;
    },
    async restart(timeoutMs = START_TIMEOUT_MS) {
      await handle.stop();
      // The old sockets may need a moment to be released: retry until the deadline.
      const deadline = Date.now() + timeoutMs;
      let started;
      for (;;) {
        try {
          started = await spawnOnce(argvFor(ports), label, stderrTail);
          break;
        } catch (err) {
          if (Date.now() >= deadline) throw err;
          await delay(100);
        }
      }
      current = await whenReady(started);
      const moved = listeners.filter((key) => portOf(current.addrs[key] ?? ':0') !== ports[key]);
      if (moved.length) {
        const got = JSON.stringify(current.addrs);
        throw new Error(`${label} restarted on ${got}, expected ports ${JSON.stringify(ports)}`);
      }
    },
  };
  return handle;
}

/**
 * Starts `roomcast standalone` on loopback (HTTP, gRPC, and admin when the binary
 * has an admin listener) with `extraArgs`; see `startRoomcast` for the handle.
 */
export function startStandalone(extraArgs = []) {
  const listeners = ['http', 'grpc'];
  if (acceptsFlag('standalone', LISTEN_FLAGS.admin)) listeners.push('admin');
  return startRoomcast('standalone', { listeners, args: extraArgs });
}

/** Starts `roomcast edge` (client HTTP and admin on loopback) with `args`. */
export function startEdge(args = [], label = 'roomcast edge') {
  return startRoomcast('edge', { listeners: ['http', 'admin'], args, label });
}

/** Starts `roomcast control` (gRPC and admin on loopback) with `args`. */
export function startControl(args = [], label = 'roomcast control') {
  return startRoomcast('control', { listeners: ['grpc', 'admin'], args, label });
}
