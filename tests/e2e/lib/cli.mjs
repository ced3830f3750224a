// The binary's API subcommands (`roomcast emit | sockets | rooms | join | leave |
// disconnect`) run as a child process against a gRPC address. Runs asynchronously,
// so that the test's own socket.io-client sockets keep answering (acks, pings)
// while a command waits.

import { spawn } from 'node:child_process';
import { binaryPath, trackChild } from './process.mjs';
import { withTimeout } from './wait.mjs';

/**
 * Runs `roomcast <args…> --server http://<grpcAddr> [--api-key KEY] [--json]`
 * and resolves to `{ code, stdout, stderr, json }` once it exits; `json` is the
 * parsed stdout when it is JSON, else undefined. Rejects if it runs past
 * `timeoutMs` (and kills it).
 */
export async function runCli(args, { grpcAddr, apiKey, json = true, timeoutMs = 20_000 } = {}) {
  const argv = [...args];
  if (grpcAddr !== undefined) argv.push('--server', `http://${grpcAddr}`);
  if (apiKey !== undefined) argv.push('--api-key', apiKey);
  if (json) argv.push('--json');
  // The CLI reads ROOMCAST_SERVER / ROOMCAST_API_KEY: don't let the caller's leak in.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('ROOMCAST_')));
  const child = spawn(binaryPath(), argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
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
