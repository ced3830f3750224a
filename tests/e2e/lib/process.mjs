// Starts `roomcast standalone` as a child process on 127.0.0.1:0 ports and hands back
// its addresses, parsed from the one line the binary prints on stdout when ready:
//   roomcast listening http=127.0.0.1:PORT grpc=127.0.0.1:PORT

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { withTimeout } from './wait.mjs';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The binary under test: `$ROOMCAST_BIN`, else `<repo>/target/debug/roomcast`. */
export function binaryPath() {
  return process.env.ROOMCAST_BIN || path.join(REPO_ROOT, 'target', 'debug', 'roomcast');
}

const READY_LINE = /^roomcast listening http=(\S+) grpc=(\S+)$/;
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const STDERR_TAIL_LINES = 200;

// Children still running when the test process exits (a crash, a forgotten stop())
// are killed rather than left behind.
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

function childEnv() {
  // The binary reads ROOMCAST_* variables as flags: don't let the caller's leak in.
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('ROOMCAST_')) delete env[key];
  }
  return env;
}

function splitAddr(addr) {
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

/** Spawns one process and resolves once it printed its listening line. */
function spawnOnce(args, stderrTail) {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    return Promise.reject(new Error(`roomcast binary not found at ${bin} (build it or set ROOMCAST_BIN)`));
  }
  const child = spawn(bin, ['standalone', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv(),
  });
  running.add(child);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  readline.createInterface({ input: child.stderr }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
    if (process.env.ROOMCAST_E2E_LOG) process.stderr.write(`[roomcast ${child.pid}] ${line}\n`);
  });
  const ready = new Promise((resolve, reject) => {
    const extraStdout = [];
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = READY_LINE.exec(line.trim());
      if (m) resolve({ http: m[1], grpc: m[2] });
      else extraStdout.push(line);
    });
    child.once('error', reject);
    exited.then(({ code, signal }) =>
      reject(
        new Error(
          `roomcast exited (code ${code}, signal ${signal}) before printing its listening line` +
            `\nargs: ${args.join(' ')}\nstdout: ${extraStdout.join('\n')}` +
            `\nstderr (tail):\n${stderrTail.slice(-30).join('\n')}`,
        ),
      ),
    );
  });
  return withTimeout(ready, START_TIMEOUT_MS, 'roomcast to print its listening line')
    .then((addrs) => ({ child, exited, addrs }))
    .catch((err) => {
      child.kill('SIGKILL');
      throw err;
    });
}

async function stopChild(child, exited, timeoutMs) {
  if (child.exitCode !== null || child.signalCode !== null) return exited;
  child.kill('SIGTERM');
  try {
    return await withTimeout(exited, timeoutMs, `roomcast (pid ${child.pid}) to exit after SIGTERM`);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
}

/**
 * Starts `roomcast standalone` with `--listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0`
 * and `extraArgs`. Resolves to a handle:
 *   httpUrl   "http://127.0.0.1:PORT" (give it to socket.io-client)
 *   grpcAddr  "127.0.0.1:PORT"
 *   proc      the ChildProcess (changes after restart())
 *   stop()    SIGTERM, wait for exit (SIGKILL after a deadline); resolves {code, signal}
 *   restart() stop, then start again on the SAME ports with the same flags
 *   stderrTail() the last lines the process logged, for failure messages
 */
export async function startStandalone(extraArgs = []) {
  const stderrTail = [];
  let current = await spawnOnce(
    ['--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', ...extraArgs],
    stderrTail,
  );
  const http = splitAddr(current.addrs.http);
  const grpc = splitAddr(current.addrs.grpc);

  const handle = {
    httpPort: http.port,
    grpcPort: grpc.port,
    httpUrl: `http://127.0.0.1:${http.port}`,
    grpcAddr: `127.0.0.1:${grpc.port}`,
    get proc() {
      return current.child;
    },
    /** True while the process runs. */
    get alive() {
      return current.child.exitCode === null && current.child.signalCode === null;
    },
    stderrTail: () => stderrTail.join('\n'),
    stop: (timeoutMs = STOP_TIMEOUT_MS) => stopChild(current.child, current.exited, timeoutMs),
    async restart(timeoutMs = START_TIMEOUT_MS) {
      await handle.stop();
      const args = [
        '--listen', `127.0.0.1:${http.port}`,
        '--grpc-listen', `127.0.0.1:${grpc.port}`,
        ...extraArgs,
      ];
      // The old sockets may need a moment to be released: retry until the deadline.
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          current = await spawnOnce(args, stderrTail);
          break;
        } catch (err) {
          if (Date.now() >= deadline) throw err;
          await delay(100);
        }
      }
      const got = [splitAddr(current.addrs.http).port, splitAddr(current.addrs.grpc).port];
      if (got[0] !== http.port || got[1] !== grpc.port) {
        throw new Error(`restart listened on ${got.join('/')}, expected ${http.port}/${grpc.port}`);
      }
    },
  };
  return handle;
}
