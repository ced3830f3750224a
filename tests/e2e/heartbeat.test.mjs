// Engine.IO's heartbeat, seen from clients: the server pings every interval, a
// client that answers stays, one that stops answering is closed once the ping
// timeout passes, and a connection that joins no namespace is closed after the
// connect timeout. Short intervals, so each case takes about a second.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { io } from 'socket.io-client';
import { RawSocket, fetchMetrics, startStandalone, waitFor } from './lib/index.mjs';

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const CONNECT_TIMEOUT = 500;

describe('Engine.IO heartbeat', { timeout: 60_000 }, () => {
  let server;

  before(async () => {
    server = await startStandalone([
      '--allow-anonymous',
      '--ping-interval-ms', String(PING_INTERVAL),
      '--ping-timeout-ms', String(PING_TIMEOUT),
      '--connect-timeout-ms', String(CONNECT_TIMEOUT),
    ]);
  });
  after(() => server?.stop());

  const disconnects = async (reason) =>
    (await fetchMetrics(server.adminUrl)).get(`roomcast_edge_disconnects_total{reason="${reason}"}`) ?? 0;

  it('announces the interval and timeout, and keeps a client that answers every ping', async () => {
    const raw = await RawSocket.connect(server.httpUrl);
    try {
      assert.equal(raw.open.pingInterval, PING_INTERVAL);
      assert.equal(raw.open.pingTimeout, PING_TIMEOUT);
      await raw.connectNamespace('/');
      const start = Date.now();
      await waitFor(() => raw.pings >= 4, 5000, 'four pings');
      // Four pings, one per interval, the first an interval after the open.
      assert.ok(Date.now() - start >= 3 * PING_INTERVAL, `four pings in ${Date.now() - start} ms`);
      assert.equal(raw.closed, null);
    } finally {
      raw.terminate();
    }
  });

  it('closes a client that stops answering once the ping timeout passes', async () => {
    const before = await disconnects('ping_timeout');
    const raw = await RawSocket.connect(server.httpUrl, { answerPings: false });
    await raw.connectNamespace('/');
    await waitFor(() => raw.pings >= 1, 5000, 'the first ping');
    const pinged = Date.now();
    const closed = await raw.waitClosed(5000);
    const waited = Date.now() - pinged;
    assert.deepEqual(closed, { code: 1000, reason: 'ping_timeout' });
    assert.ok(waited >= PING_TIMEOUT * 0.8, `closed ${waited} ms after the ping, before the timeout`);
    assert.equal(raw.pings, 1, 'no second ping while the first waits for its pong');
    await waitFor(async () => (await disconnects('ping_timeout')) > before, 5000, 'the ping_timeout counter');
  });

  it('closes a connection that connects no namespace within the connect timeout', async () => {
    const before = await disconnects('connect_timeout');
    const opened = Date.now();
    const raw = await RawSocket.connect(server.httpUrl);
    assert.deepEqual(await raw.waitClosed(5000), { code: 1000, reason: 'connect_timeout' });
    const waited = Date.now() - opened;
    assert.ok(waited >= CONNECT_TIMEOUT * 0.8, `closed after ${waited} ms`);
    await waitFor(async () => (await disconnects('connect_timeout')) > before, 5000, 'the connect_timeout counter');
  });

  it('closes a long-polling session that stops answering at ping interval + ping timeout, on time', async () => {
    const poll = (query, init = {}) =>
      fetch(`${server.httpUrl}/socket.io/?EIO=4&transport=polling${query}`, {
        signal: AbortSignal.timeout(5000),
        ...init,
      });
    /**
     * One session that answers nothing. The server starts its clock between
     * the handshake's request and its answer: returns how long after each of
     * the two the close came, less interval + timeout.
     */
    async function silentSession() {
      const sent = performance.now();
      const open = await poll('');
      const answered = performance.now();
      const { sid } = JSON.parse((await open.text()).slice(1));
      const post = await poll(`&sid=${sid}`, { method: 'POST', body: '40' });
      assert.equal(await post.text(), 'ok');
      // Long-polls without ever answering a ping, until a GET brings the close.
      const got = [];
      for (;;) {
        const body = await (await poll(`&sid=${sid}`)).text();
        got.push(...body.split('\x1e'));
        if (got.includes('1')) break;
      }
      const closed = performance.now();
      assert.deepEqual(got.filter((p) => p === '2'), ['2'], 'one ping, then the close');
      // A request after the close finds no session.
      const late = await poll(`&sid=${sid}`, { method: 'POST', body: '3' });
      assert.equal(late.status, 400);
      await late.text();
      const due = PING_INTERVAL + PING_TIMEOUT;
      return { fromRequest: closed - sent - due, fromAnswer: closed - answered - due };
    }
    const before = await disconnects('ping_timeout');
    await (await poll('')).text(); // a warm connection for the measured ones
    const runs = [];
    for (let i = 0; i < 5; i++) runs.push(await silentSession());
    const fmt = (key) => runs.map((r) => r[key].toFixed(1)).join(', ');
    console.log(`polling ping timeout, ms after interval + timeout: from the request ${fmt('fromRequest')}; from the answer ${fmt('fromAnswer')}`);
    // Never before the deadline; on time within a few ms (the median), where
    // a sweep-driven deadline came 10-40 ms late.
    for (const r of runs) assert.ok(r.fromRequest >= 0, `closed before interval + timeout: ${fmt('fromRequest')}`);
    const median = runs.map((r) => r.fromAnswer).sort((a, b) => a - b)[2];
    assert.ok(median <= 10, `closed ${median.toFixed(1)} ms late (median; ${fmt('fromAnswer')})`);
    await waitFor(async () => (await disconnects('ping_timeout')) >= before + 5, 5000, 'the ping_timeout counter');
  });

  it('closes its WebSockets with 1001, reason server_shutdown, when it stops', async () => {
    const own = await startStandalone(['--allow-anonymous']);
    const raw = await RawSocket.connect(own.httpUrl);
    try {
      await raw.connectNamespace('/');
      const stopped = own.stop();
      assert.deepEqual(await raw.waitClosed(10_000), { code: 1001, reason: 'server_shutdown' });
      assert.equal((await stopped).code, 0);
    } finally {
      raw.terminate();
      await own.stop();
    }
  });

  for (const transports of [['polling'], ['websocket'], ['polling', 'websocket']]) {
    it(`keeps socket.io-client connected across pings (${transports.join(' then ')})`, async () => {
      const socket = io(server.httpUrl, { transports, reconnection: false, forceNew: true });
      try {
        const reasons = [];
        socket.on('disconnect', (reason) => reasons.push(reason));
        await waitFor(() => socket.connected, 5000, 'the client to connect');
        let pings = 0;
        socket.io.engine.on('ping', () => {
          pings += 1;
        });
        await waitFor(() => pings >= 4, 5000, 'four pings answered by the client');
        assert.deepEqual(reasons, []);
        assert.equal(socket.connected, true);
      } finally {
        socket.close();
      }
    });
  }
});
