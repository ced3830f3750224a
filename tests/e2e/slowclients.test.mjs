// Slow and silent clients on the client port, seen from raw TCP sockets that
// trickle bytes or send nothing: request heads and polling bodies have
// deadlines, a connection must reach its first request within the handshake
// deadline (TLS handshake included), a polling POST announcing a body over
// --max-payload is refused before it is sent, and connections on their way to
// a first request are capped. Each is counted in /metrics; sessions that are
// already open, and the official socket.io-client afterwards, are unaffected.
// Deadlines are tight (hundreds of ms) so the suite runs fast.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import tlsSocket from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { io } from 'socket.io-client';
import {
  TestClient,
  binaryPath,
  createRoomcastClient,
  fetchMetrics,
  parseReadyLine,
  startStandalone,
  stopChild,
  trackChild,
  useBystanderServer,
  waitConnected,
  waitFor,
  withTimeout,
  selfSigned,
} from './lib/index.mjs';

const limitHits = (limit) => `roomcast_edge_limit_hits_total{limit="${limit}"}`;

async function counter(server, series) {
  return (await fetchMetrics(server.adminUrl)).get(series) ?? 0;
}

/** Waits until a counter reached `atLeast`; returns its value. */
function counterReaches(server, series, atLeast, timeoutMs = 10_000) {
  return waitFor(
    async () => {
      const v = await counter(server, series);
      return v >= atLeast ? v : false;
    },
    timeoutMs,
    `${series} to reach ${atLeast}`,
    50,
  );
}

/** The server's resident memory in KiB, from /proc (Linux). */
function rssKib(server) {
  const status = readFileSync(`/proc/${server.proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
}

/**
 * A raw TCP connection that records what it receives and when it is closed
 * (by either side, cleanly or by a reset).
 */
class RawTcp {
  constructor(socket) {
    this.socket = socket;
    this.received = Buffer.alloc(0);
    this.closed = false;
    socket.on('data', (chunk) => {
      this.received = Buffer.concat([this.received, chunk]);
    });
    socket.on('close', () => {
      this.closed = true;
    });
    // A reset shows up as an error before `close`; the close is what counts.
    socket.on('error', () => {});
  }

  static connect(port) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => resolve(new RawTcp(socket)));
      socket.once('error', reject);
    });
  }

  write(data) {
    if (!this.closed && !this.socket.destroyed) this.socket.write(data);
  }

  /** Writes `data` one byte every `everyMs` until it is all sent or the connection closes. */
  trickle(data, everyMs = 50) {
    const bytes = Buffer.from(data);
    let i = 0;
    const timer = setInterval(() => {
      if (this.closed || i >= bytes.length) {
        clearInterval(timer);
        return;
      }
      this.write(bytes.subarray(i, i + 1));
      i += 1;
    }, everyMs);
    this.stopTrickle = () => clearInterval(timer);
    return timer;
  }

  waitClosed(what, timeoutMs = 10_000) {
    return waitFor(() => this.closed, timeoutMs, what, 10);
  }

  /** The first complete HTTP response received: `{ status, headers, body }`. */
  response(timeoutMs = 5000) {
    return waitFor(() => parseResponse(this.received), timeoutMs, 'an HTTP response', 10);
  }

  /** Drops what was received so far (the next response is then the first). */
  consume(bytes) {
    this.received = this.received.subarray(bytes);
  }

  destroy() {
    this.stopTrickle?.();
    this.socket.destroy();
  }
}

/** Parses one HTTP/1.1 response with a Content-Length; `null` while incomplete. */
function parseResponse(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(lines[0].split(' ')[1]);
  const headers = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers['content-length'] ?? 0);
  if (buf.length < end + 4 + length) return null;
  const body = buf.subarray(end + 4, end + 4 + length).toString();
  return { status, headers, body, size: end + 4 + length };
}

const HANDSHAKE_GET = 'GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';

/** A polling handshake over `raw` (kept alive); resolves to the session id. */
async function pollingHandshake(raw) {
  raw.write(HANDSHAKE_GET);
  const res = await raw.response();
  assert.equal(res.status, 200, res.body);
  raw.consume(res.size);
  return JSON.parse(res.body.slice(1)).sid;
}

/** Whether the polling session `sid` is still known to the server (a fresh GET of it). */
async function sessionGone(port, sid) {
  const raw = await RawTcp.connect(port);
  try {
    raw.write(`GET /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const res = await raw.response();
    return res.status === 400 && res.body.includes('Session ID unknown');
  } finally {
    raw.destroy();
  }
}

describe('request deadlines and early 413 on the client port', { timeout: 120_000 }, () => {
  const MAX_PAYLOAD = 1000;
  let server;
  const state = useBystanderServer([
    '--allow-anonymous',
    '--max-payload', String(MAX_PAYLOAD),
    '--request-head-timeout-ms', '400',
    '--request-body-timeout-ms', '400',
    // Long enough that only the head and body deadlines can close these.
    '--handshake-timeout-ms', '30000',
  ]);
  before(() => ({ server } = state));

  it('a request head trickled a byte at a time is closed at its deadline, unanswered', async () => {
    const before = await counter(server, limitHits('request_head_timeout'));
    const raw = await RawTcp.connect(server.httpPort);
    try {
      // 50 ms a byte: the whole head would take ~3 s.
      raw.trickle(HANDSHAKE_GET);
      await raw.waitClosed('the trickled connection to be closed');
      assert.equal(raw.received.length, 0, `nothing answered: ${raw.received}`);
      await counterReaches(server, limitHits('request_head_timeout'), before + 1);
      await state.stillServes();
    } finally {
      raw.destroy();
    }
  });

  it('a second request head trickled on a keep-alive connection is closed at its deadline', async () => {
    const before = await counter(server, limitHits('request_head_timeout'));
    const raw = await RawTcp.connect(server.httpPort);
    try {
      const sid = await pollingHandshake(raw);
      raw.trickle(`POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await raw.waitClosed('the keep-alive connection to be closed');
      assert.equal(raw.received.length, 0, `nothing answered: ${raw.received}`);
      await counterReaches(server, limitHits('request_head_timeout'), before + 1);
    } finally {
      raw.destroy();
    }
  });

  it('an idle keep-alive connection is closed after the head deadline, and not counted as a hit', async () => {
    const before = await counter(server, limitHits('request_head_timeout'));
    const raw = await RawTcp.connect(server.httpPort);
    try {
      await pollingHandshake(raw);
      await raw.waitClosed('the idle keep-alive connection to be closed');
      assert.equal(raw.received.length, 0, `nothing more sent: ${raw.received}`);
      assert.equal(await counter(server, limitHits('request_head_timeout')), before);
    } finally {
      raw.destroy();
    }
  });

  it('a polling body trickled a byte at a time gets 408 and its session closes', async () => {
    const before = await counter(server, limitHits('request_body_timeout'));
    const raw = await RawTcp.connect(server.httpPort);
    try {
      const sid = await pollingHandshake(raw);
      const body = '4hello';
      raw.write(
        `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n` +
          `Content-Type: text/plain\r\nContent-Length: ${body.length + 200}\r\n\r\n`,
      );
      raw.trickle(body + 'x'.repeat(200));
      const res = await raw.response();
      assert.equal(res.status, 408, res.body);
      assert.equal(res.headers.connection, 'close');
      await raw.waitClosed('the connection to be closed after the 408');
      await counterReaches(server, limitHits('request_body_timeout'), before + 1);
      assert.ok(await sessionGone(server.httpPort, sid), 'the session is closed');
      await state.stillServes();
    } finally {
      raw.destroy();
    }
  });

  it('a polling POST announcing 2 GiB gets 413 before any of the body is sent', async () => {
    const before = await counter(server, limitHits('max_payload'));
    const raw = await RawTcp.connect(server.httpPort);
    try {
      const sid = await pollingHandshake(raw);
      raw.write(
        `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n` +
          'Content-Type: text/plain\r\nContent-Length: 2147483648\r\n\r\n',
      );
      // Not a byte of the body is sent: the answer can only come from the head.
      const res = await raw.response();
      assert.equal(res.status, 413, res.body);
      assert.equal(res.headers.connection, 'close');
      await raw.waitClosed('the connection to be closed after the 413');
      await counterReaches(server, limitHits('max_payload'), before + 1);
      assert.ok(await sessionGone(server.httpPort, sid), 'the session is closed');
    } finally {
      raw.destroy();
    }
  });

  it('a body within the limits, sent at once, still goes through', async () => {
    const raw = await RawTcp.connect(server.httpPort);
    try {
      const sid = await pollingHandshake(raw);
      const body = '40';
      raw.write(
        `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n` +
          `Content-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      const res = await raw.response();
      assert.equal(res.status, 200, res.body);
      assert.equal(res.body, 'ok');
    } finally {
      raw.destroy();
    }
  });
});

describe('handshake deadline and the cap on pending handshakes', { timeout: 120_000 }, () => {
  const CAP = 1000;
  let server;
  let pool;
  const state = useBystanderServer([
    '--allow-anonymous',
    '--max-pending-handshakes', String(CAP),
    // Long enough to open CAP connections before the first is closed.
    '--handshake-timeout-ms', '3000',
    '--request-head-timeout-ms', '30000',
  ]);
  before(() => ({ server, pool } = state));

  it(`${CAP} idle connections hold the cap until their deadline; more are closed at once; sessions are unaffected`, async (t) => {
    const capHitsBefore = await counter(server, limitHits('max_pending_handshakes'));
    const deadlineHitsBefore = await counter(server, limitHits('handshake_timeout'));
    const rssBefore = rssKib(server);
    const idle = [];
    try {
      for (let i = 0; i < CAP; i += 100) {
        idle.push(...(await Promise.all(Array.from({ length: 100 }, () => RawTcp.connect(server.httpPort)))));
      }
      const rssUnder = rssKib(server);
      t.diagnostic(
        `server RSS: ${rssBefore} KiB before, ${rssUnder} KiB with ${CAP} idle connections ` +
          `(${(((rssUnder - rssBefore) * 1024) / CAP).toFixed(0)} B each)`,
      );

      // Over the cap: closed at once, while the first ones are all still open.
      const extra = await Promise.all(Array.from({ length: 5 }, () => RawTcp.connect(server.httpPort)));
      await Promise.all(extra.map((raw) => raw.waitClosed('a connection over the cap to be closed')));
      assert.equal(idle.filter((raw) => raw.closed).length, 0, 'the pending ones are still open');
      await counterReaches(server, limitHits('max_pending_handshakes'), capHitsBefore + 5);

      // An open session is not counted toward the cap, nor held up by it.
      await state.stillServes();

      // At their deadline the idle ones are closed, unanswered.
      await waitFor(() => idle.every((raw) => raw.closed), 20_000, 'every idle connection to be closed', 50);
      assert.equal(idle.filter((raw) => raw.received.length > 0).length, 0, 'none was answered');
      await counterReaches(server, limitHits('handshake_timeout'), deadlineHitsBefore + CAP);
      const rssAfter = rssKib(server);
      t.diagnostic(`server RSS: ${rssAfter} KiB once they are closed`);
      assert.ok(rssUnder - rssBefore < 100 * 1024, `bounded: ${rssUnder - rssBefore} KiB for ${CAP} connections`);

      // The place is free again: the official client connects, and sessions still work.
      const fresh = await pool.connect('/', { transports: ['polling', 'websocket'] });
      assert.ok(fresh.socket.connected);
      await state.stillServes();
    } finally {
      for (const raw of idle) raw.destroy();
    }
  });
});

describe('the tls port: handshakes count toward the cap and have the deadline', { timeout: 120_000 }, () => {
  const CAP = 10;
  let dir;
  let tls;
  let server;
  let api;
  const clients = [];

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-slow-tls-'));
    tls = selfSigned(dir);
    server = await startStandalone([
      '--allow-anonymous',
      '--tls-cert-file', tls.cert,
      '--tls-key-file', tls.key,
      '--max-pending-handshakes', String(CAP),
      '--handshake-timeout-ms', '600',
    ]);
    api = createRoomcastClient(server.grpcAddr);
  });

  after(async () => {
    for (const c of clients) c.socket.close();
    api?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // WebSocket only: a polling client opens new TCP connections for its
  // requests, and each of those is pending until its head is in.
  const connectTls = async () => {
    const socket = io(`https://127.0.0.1:${server.httpPort}`, {
      ca: tls.pem,
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
    });
    const client = new TestClient(socket);
    clients.push(client);
    await waitConnected(socket);
    return client;
  };

  it('TCP connections that never start TLS hold the cap, are closed at the deadline, and then TLS clients connect', async () => {
    const established = await connectTls();
    const capHitsBefore = await counter(server, limitHits('max_pending_handshakes'));
    const deadlineHitsBefore = await counter(server, limitHits('handshake_timeout'));
    const silent = await Promise.all(Array.from({ length: CAP }, () => RawTcp.connect(server.httpPort)));
    try {
      const extra = await RawTcp.connect(server.httpPort);
      await extra.waitClosed('a connection over the cap to be closed');
      assert.equal(silent.filter((raw) => raw.closed).length, 0, 'the silent ones are still open');
      await counterReaches(server, limitHits('max_pending_handshakes'), capHitsBefore + 1);
      assert.ok(established.socket.connected, 'the established session is unaffected');

      await waitFor(() => silent.every((raw) => raw.closed), 10_000, 'every silent connection to be closed', 20);
      await counterReaches(server, limitHits('handshake_timeout'), deadlineHitsBefore + CAP);

      const fresh = await connectTls();
      let n = 0;
      for (const client of [established, fresh]) {
        n += 1;
        await api.emit({ to: { socket_ids: [client.id] }, event: 'still-there', args_json: JSON.stringify([n]) });
        const want = n;
        await client.nextEvent('still-there', ([got]) => got === want);
      }
    } finally {
      for (const raw of silent) raw.destroy();
    }
  });

  it('a client that finishes the TLS handshake but sends no request is closed at the deadline', async () => {
    const before = await counter(server, limitHits('handshake_timeout'));
    const socket = tlsSocket.connect({ host: '127.0.0.1', port: server.httpPort, ca: tls.pem, servername: 'localhost' });
    const raw = new RawTcp(socket);
    try {
      await withTimeout(new Promise((resolve) => socket.once('secureConnect', resolve)), 5000, 'the TLS handshake');
      await raw.waitClosed('the silent TLS connection to be closed');
      assert.equal(raw.received.length, 0, 'nothing answered');
      await counterReaches(server, limitHits('handshake_timeout'), before + 1);
    } finally {
      raw.destroy();
    }
  });
});

describe('the open-files limit', { timeout: 60_000 }, () => {
  /**
   * Starts a standalone under `prlimit --nofile=SOFT:HARD` (which execs it, so
   * the pid is the server's); resolves once it is listening.
   */
  async function startLimited(nofile, args) {
    const child = spawn(
      'prlimit',
      [`--nofile=${nofile}`, '--', binaryPath(), 'standalone', '--allow-anonymous',
        '--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...args],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        // The binary reads ROOMCAST_* variables as flags: don't let the caller's leak in.
        env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ROOMCAST_'))),
      },
    );
    const exited = trackChild(child);
    const stderr = [];
    readline.createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line));
    await withTimeout(
      new Promise((resolve, reject) => {
        readline.createInterface({ input: child.stdout }).on('line', (line) => {
          if (parseReadyLine(line)) resolve();
        });
        exited.then(() => reject(new Error(`exited before listening:\n${stderr.join('\n')}`)));
      }),
      20_000,
      'the limited server to listen',
    );
    const limits = readFileSync(`/proc/${child.pid}/limits`, 'utf8');
    const [, soft, hard] = /Max open files\s+(\d+)\s+(\d+)/.exec(limits);
    return { child, exited, stderr, soft: Number(soft), hard: Number(hard) };
  }

  it('is raised from the soft to the hard limit at start, with a warning when it leaves little room beside the cap', async () => {
    const roomy = await startLimited('256:4096', []);
    try {
      assert.equal(roomy.soft, 4096, 'raised to the hard limit');
      assert.equal(roomy.hard, 4096);
      assert.ok(!roomy.stderr.some((l) => l.includes('open-files limit')), roomy.stderr.join('\n'));
    } finally {
      await stopChild(roomy.child, roomy.exited);
    }
    const tight = await startLimited('256:4096', ['--max-pending-handshakes', '3000']);
    try {
      assert.equal(tight.soft, 4096);
      assert.ok(
        tight.stderr.some((l) => l.includes('open-files limit') && l.includes('max-pending-handshakes')),
        `a warning: ${tight.stderr.join('\n')}`,
      );
    } finally {
      await stopChild(tight.child, tight.exited);
    }
  });
});
