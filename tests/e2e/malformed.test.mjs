// Untrusted input: frames and HTTP requests the official client never sends. Each
// must close (or refuse) only the offending connection; the process stays up and a
// well-behaved socket.io-client connected alongside keeps receiving emits.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { RawSocket, useBystanderServer } from './lib/index.mjs';

const MAX_PAYLOAD = 1000;

describe('malformed input', { timeout: 120_000 }, () => {
  let server;
  let api;
  let bystander;

  const state = useBystanderServer([
    '--allow-anonymous',
    '--namespace', '/',
    '--namespace', '/admin',
    '--max-payload', String(MAX_PAYLOAD),
  ]);
  before(() => ({ server, api, bystander } = state));

  const assertServerStillServes = () => state.stillServes();

  /** A raw WebSocket connected to namespace "/", with its Socket.IO sid. */
  async function rawConnected() {
    const raw = await RawSocket.connect(server.httpUrl);
    raw.sid = await raw.connectNamespace('/');
    return raw;
  }

  describe('over a raw WebSocket', () => {
    it('a well-formed event does not close the connection (control)', async () => {
      const consumer = await api.consume({ events: ['hello'] }).ready();
      const raw = await rawConnected();
      try {
        raw.send('42["hello","world"]');
        const event = await consumer.next((e) => e.socket_id === raw.sid);
        assert.deepEqual(JSON.parse(event.args_json), ['world']);

        // An event just under max payload is fine too.
        const big = `42["hello","${'x'.repeat(MAX_PAYLOAD - 100)}"]`;
        raw.send(big);
        await consumer.next((e) => e.socket_id === raw.sid && e.args_json.length > 800);

        await api.emit({ to: { socket_ids: [raw.sid] }, event: 'probe', args_json: '[1]' });
        await raw.nextFrame((f) => f === '42["probe",1]');
        assert.ok(raw.isOpen);
      } finally {
        consumer.close();
        raw.terminate();
      }
    });

    const closingFrames = [
      ['garbage text', 'this is not engine.io'],
      ['an unknown Engine.IO packet type', '9hello'],
      ['an unknown Socket.IO packet type', '49["x"]'],
      ['invalid JSON in an event', '42["broken", {'],
      ['the reserved event name "connect"', '42["connect"]'],
      ['the reserved event name "disconnecting"', '42["disconnecting"]'],
      ['an event for a namespace that is not connected', '42/admin,["hello"]'],
      [`a frame larger than max payload (${MAX_PAYLOAD} bytes)`, `42["big","${'x'.repeat(2 * MAX_PAYLOAD)}"]`],
      ['an event whose payload is not an array', '42{"not":"an array"}'],
      ['an event with an empty array', '42[]'],
      ['an ack whose payload is not an array', '431{"not":"an array"}'],
      ['a DISCONNECT with a payload', '41{"reason":"x"}'],
      ['a duplicate CONNECT', '40'],
      ['a CONNECT whose payload is not an object', '40/admin,"not an object"'],
      ['a client-sent ping outside an upgrade', '2'],
    ];

    for (const [what, frame] of closingFrames) {
      it(`closes the connection on ${what}`, async () => {
        const raw = await rawConnected();
        try {
          raw.send(frame);
          await raw.waitClosed();
        } finally {
          raw.terminate();
        }
        await assertServerStillServes();
      });
    }

    it('closes the connection on a text frame while binary attachments are pending', async () => {
      const raw = await rawConnected();
      try {
        raw.send('451-["file",{"_placeholder":true,"num":0}]');
        raw.send('42["not the attachment"]');
        await raw.waitClosed();
      } finally {
        raw.terminate();
      }
      await assertServerStillServes();
    });

    it('refuses a WebSocket without EIO=4', async () => {
      await assert.rejects(RawSocket.connect(server.httpUrl, { query: 'transport=websocket' }));
      await assertServerStillServes();
    });
  });

  describe('over HTTP long-polling', () => {
    const pollingUrl = (query) => `${server.httpUrl}/socket.io/?${query}`;
    const request = (query, init = {}) =>
      fetch(pollingUrl(query), { signal: AbortSignal.timeout(5000), ...init });

    /** A new polling session; resolves to its Engine.IO sid. */
    async function pollingSession() {
      const res = await request('EIO=4&transport=polling');
      assert.equal(res.status, 200);
      const body = await res.text();
      assert.equal(body[0], '0', `expected an open packet, got ${body}`);
      return JSON.parse(body.slice(1)).sid;
    }

    /** Asserts a 400 whose body is the Engine.IO error JSON; returns it. */
    async function expectBadRequest(res, status = 400) {
      assert.equal(res.status, status);
      const body = await res.text();
      if (status !== 400) return body;
      let error;
      assert.doesNotThrow(() => {
        error = JSON.parse(body);
      }, `expected a JSON error body, got ${JSON.stringify(body)}`);
      assert.equal(typeof error.code, 'number');
      assert.equal(typeof error.message, 'string');
      return error;
    }

    it('a POST with a garbage body gets 400', async () => {
      const sid = await pollingSession();
      const res = await request(`EIO=4&transport=polling&sid=${sid}`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain;charset=UTF-8' },
        body: 'this is not an engine.io payload',
      });
      assert.equal(res.status, 400);
      await res.text();

      // The session is gone: polling it again is refused (rather than long-polling).
      const poll = await request(`EIO=4&transport=polling&sid=${sid}`).catch((err) => {
        assert.fail(`the session still answers polling after a garbage POST (${err.name})`);
      });
      assert.equal(poll.status, 400);
      await poll.text();
      await assertServerStillServes();
    });

    it('a GET without EIO gets 400 with a JSON error', async () => {
      await expectBadRequest(await request('transport=polling'));
      await assertServerStillServes();
    });

    it('a GET with an unknown transport gets 400 "Transport unknown"', async () => {
      const error = await expectBadRequest(await request('EIO=4&transport=carrier-pigeon'));
      assert.deepEqual(error, { code: 0, message: 'Transport unknown' });
    });

    it('a request for an unknown sid gets 400 "Session ID unknown"', async () => {
      const error = await expectBadRequest(await request('EIO=4&transport=polling&sid=no-such-session'));
      assert.deepEqual(error, { code: 1, message: 'Session ID unknown' });
      await assertServerStillServes();
    });

    it('a POST without a sid gets 400 "Bad handshake method"', async () => {
      const error = await expectBadRequest(
        await request('EIO=4&transport=polling', { method: 'POST', body: '40' }),
      );
      assert.deepEqual(error, { code: 2, message: 'Bad handshake method' });
    });

    it('a POST larger than max payload gets 413', async () => {
      const sid = await pollingSession();
      const res = await request(`EIO=4&transport=polling&sid=${sid}`, {
        method: 'POST',
        body: `4${'x'.repeat(2 * MAX_PAYLOAD)}`,
      });
      assert.equal(res.status, 413);
      await res.text();
      await assertServerStillServes();
    });
  });
});
