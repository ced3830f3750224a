// Untrusted input: frames and HTTP requests the official client never sends. Each
// must close (or refuse) only the offending connection; the process stays up and a
// well-behaved socket.io-client connected alongside keeps receiving emits.

import assert from 'node:assert/strict';
import net from 'node:net';
import { before, describe, it } from 'node:test';
import WebSocket from 'ws';
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

        // Nesting up to the bound backends have too (100 levels) is fine.
        raw.send(`42["hello",${'['.repeat(99)}"deep"${']'.repeat(99)}]`);
        const deep = await consumer.next((e) => e.socket_id === raw.sid && e.args_json.includes('deep'));
        assert.equal(JSON.parse(deep.args_json).flat(Infinity)[0], 'deep');

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
      ['an event nested deeper than 100 levels', `42["deep",${'['.repeat(100)}1${']'.repeat(100)}]`],
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

  describe('WebSocket upgrade requests', () => {
    /** Sends a raw upgrade request with this Sec-WebSocket-Key; resolves to the status line. */
    function upgradeWithKey(key) {
      const { hostname, port } = new URL(server.httpUrl);
      return new Promise((resolve, reject) => {
        const sock = net.connect({ host: hostname, port: Number(port) });
        let got = '';
        sock.setTimeout(5000, () => {
          sock.destroy();
          reject(new Error(`no answer to an upgrade with a ${key.length}-byte key`));
        });
        sock.on('data', (d) => {
          got += d.toString('latin1');
          if (got.includes('\r\n')) {
            sock.destroy();
            resolve(got.split('\r\n')[0]);
          }
        });
        sock.on('error', reject);
        sock.write(
          'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n' +
            `Host: ${hostname}:${port}\r\n` +
            'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
            `Sec-WebSocket-Key: ${key}\r\n\r\n`,
        );
      });
    }

    it('a second WebSocket for an upgraded session is accepted and closed at once; the session goes on', async () => {
      const base = `${server.httpUrl}/socket.io/?EIO=4`;
      const open = await fetch(`${base}&transport=polling`);
      const { sid } = JSON.parse((await open.text()).slice(1));
      const wsUrl = `${base.replace(/^http/, 'ws')}&transport=websocket&sid=${sid}`;
      // The first WebSocket upgrades the session: probe, then switch.
      const first = new RawSocket(new WebSocket(wsUrl));
      await new Promise((resolve, reject) => {
        first.ws.once('open', resolve);
        first.ws.once('error', reject);
      });
      try {
        first.send('2probe');
        await first.nextFrame((f) => f === '3probe');
        first.send('5');
        const sidOnWs = await first.connectNamespace('/');

        // The second is answered 101, then closed with a reason.
        const second = new RawSocket(new WebSocket(wsUrl));
        let upgraded = false;
        second.ws.once('upgrade', () => {
          upgraded = true;
        });
        const closed = await second.waitClosed();
        assert.ok(upgraded, 'the second WebSocket was upgraded before it was closed');
        assert.deepEqual(closed, { code: 1008, reason: 'already_upgraded' });

        // The session is still on the first one.
        await api.emit({ to: { socket_ids: [sidOnWs] }, event: 'still-here', args_json: '[1]' });
        await first.nextFrame((f) => f === '42["still-here",1]');
        assert.ok(first.isOpen);
      } finally {
        first.terminate();
      }
      await assertServerStillServes();
    });

    it('a well-formed key is upgraded (control)', async () => {
      assert.match(await upgradeWithKey('dGhlIHNhbXBsZSBub25jZQ=='), /^HTTP\/1\.1 101 /);
    });

    for (const [what, key] of [
      ['an empty', ''],
      ['a 10 KB', 'A'.repeat(10 * 1024)],
      ['a non-base64', 'not a base64 key at all!'],
      ['a 17-byte', 'dGhlIHNhbXBsZSBub25jZSE='],
    ]) {
      it(`${what} Sec-WebSocket-Key is refused with 400`, async () => {
        assert.match(await upgradeWithKey(key), /^HTTP\/1\.1 400 /);
        await assertServerStillServes();
      });
    }
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
