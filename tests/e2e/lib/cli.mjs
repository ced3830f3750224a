// The binary's API subcommands (`roomcast emit | sockets | rooms | join | leave |
// presence | disconnect`) run as a child process against a gRPC address. Runs
// asynchronously, so that the test's own socket.io-client sockets keep answering
// (acks, pings) while a command waits. Commands that stream until interrupted
// (`roomcast presence --watch`) run with `startCli`.

import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { binaryPath, stopChild, trackChild } from './process.mjs';
import { waitFor, withTimeout } from './wait.mjs';

function cliArgv(args, { grpcAddr, apiKey, json }) {
  const argv = [...args];
  if (grpcAddr !== undefined) argv.push('--server', `http://${grpcAddr}`);
  if (apiKey !== undefined) argv.push('--api-key', apiKey);
  if (json) argv.push('--json');
  return argv;
}

function cliEnv() {
  // The CLI reads ROOMCAST_SERVER / ROOMCAST_API_KEY: don't let the caller's leak in.
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('ROOMCAST_')));
}

/**
 * Runs `roomcast <args…> --server http://<grpcAddr> [--api-key KEY] [--json]`
 * and resolves to `{ code, stdout, stderr, json }` once it exits; `json` is the
 * parsed stdout when it is JSON, else undefined. Rejects if it runs past
 * `timeoutMs` (and kills it).
 */
export async function runCli(args, { grpcAddr, apiKey, json = true, timeoutMs = 20_000 } = {}) {
  const argv = cliArgv(args, { grpcAddr, apiKey, json });
  const child = spawn(binaryPath(), argv, { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnv() });
  const exited = trackChild(child);
  const stdout = [];
  const stderr = [];
  child.stdout.on('data', (chunk) => stdout.push(chunk));
  child.stderr.on('data', (chunk) => stderr.push(chunk));
  let code;
  try {
    ({ code } = await withTimeout(exited, timeoutMs, `roomcast ${argv.join(' ')} to exit`));
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const out = Buffer.concat(stdout).toString();
  let parsed;
  try {
    parsed = JSON.parse(out);
  } catch {
    parsed = undefined;
  }
  return { code, stdout: out, stderr: Buffer.concat(stderr).toString(), json: parsed };
}

/**
 * Starts `roomcast <args…> --server http://<grpcAddr> [--api-key KEY] [--json]`
 * and leaves it running, collecting what it prints. Resolves at once to a handle:
 *   lines        every stdout line so far
 *   json         every stdout line that parses as JSON, parsed
 *   next(predicate, timeoutMs, what)  the first parsed line matching, waiting for it;
 *                fails at once if the command exited
 *   stderr()     what it printed on stderr
 *   stop()       SIGTERM and wait for the exit; resolves {code, signal}
 */
export function startCli(args, { grpcAddr, apiKey, json = true } = {}) {
  const argv = cliArgv(args, { grpcAddr, apiKey, json });
  const child = spawn(binaryPath(), argv, { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnv() });
  const exited = trackChild(child);
  const lines = [];
  const parsed = [];
  const stderr = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    try {
      parsed.push(JSON.parse(line));
    } catch {
      // a text line: kept in `lines` only
    }
  });
  child.stderr.on('data', (chunk) => stderr.push(chunk));
  const running = () => child.exitCode === null && child.signalCode === null;
  const label = `roomcast ${argv.join(' ')}`;
  return {
    lines,
    json: parsed,
    stderr: () => Buffer.concat(stderr).toString(),
    next(predicate = () => true, timeoutMs = 5000, what = 'a matching line') {
      return waitFor(
        () => {
          const found = parsed.find(predicate);
          if (found) return found;
          if (!running()) {
            throw new Error(`${label} exited (code ${child.exitCode}) before printing ${what}:\n${this.stderr()}`);
          }
          return undefined;
        },
        timeoutMs,
        `${label} to print ${what}`,
      );
    },
    stop: () => stopChild(child, exited, 5000, label),
  };
}
