// The WebSocket layer of Socket.IO connections, seen from a raw client (`ws`):
// fragmented messages are assembled, the payload limit holds for a message
// assembled from fragments, and a protocol violation fails the connection with
// the close code RFC 6455 gives it. (The Autobahn cases in
// tests/python/test_autobahn.py cover the rest through the echo endpoint, which
// shares this code.)

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { RawSocket, startStandalone, waitFor } from './lib/index.mjs';

const MAX_PAYLOAD = 1000;

describe('websocket framing of socket.io connections', { timeout: 60_000 }, () => {
  let server;

  before(async () => {
    server = await startStandalone(['--allow-anonymous', '--max-payload', String(MAX_PAYLOAD)]);
  });

  after(async () => {
    await server?.stop();
  });

  it('a CONNECT packet sent in three fragments is answered', async () => {
    const raw = await RawSocket.connect(server.httpUrl);
    raw.ws.send('4', { fin: false });
    raw.ws.send('0', { fin: false });
    raw.ws.send('', { fin: true });
    const reply = await raw.nextFrame((f) => typeof f === 'string' && f.startsWith('40{'));
    assert.ok(JSON.parse(reply.slice(2)).sid);
    assert.ok(raw.isOpen);
    raw.terminate();
  });

  it('fragments that add up to more than max-payload close with 1009', async () => {
    const raw = await RawSocket.connect(server.httpUrl);
    await raw.connectNamespace('/');
    const half = Buffer.alloc(MAX_PAYLOAD / 2 + 1, 0x61);
    raw.ws.send(half, { binary: true, fin: false });
    raw.ws.send(half, { binary: true, fin: true });
    assert.deepEqual(await raw.waitClosed(), { code: 1009, reason: 'message_too_big' });
  });

  it('a text message that is not UTF-8 closes with 1007', async () => {
    const raw = await RawSocket.connect(server.httpUrl);
    await raw.connectNamespace('/');
    raw.ws.send(Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xc0, 0xaf, 0x22, 0x5d]), { binary: false });
    assert.deepEqual(await raw.waitClosed(), { code: 1007, reason: 'protocol_error' });
  });

  it('a text message cut inside a character across fragments closes with 1007', async () => {
    const raw = await RawSocket.connect(server.httpUrl);
    await raw.connectNamespace('/');
    const euro = Buffer.from('42["\u20ac"]');
    raw.ws.send(euro.subarray(0, 6), { binary: false, fin: false });
    raw.ws.send(Buffer.alloc(0), { binary: false, fin: true });
    assert.deepEqual(await raw.waitClosed(), { code: 1007, reason: 'protocol_error' });
  });

  it('a client close is answered with its own code and the connection ends', async () => {
    const raw = await RawSocket.connect(server.httpUrl);
    await raw.connectNamespace('/');
    raw.ws.close(4001, 'bye');
    const closed = await raw.waitClosed();
    assert.equal(closed.code, 4001);
  });

  it('frames sent together with the upgrade request are read, not lost', async () => {
    // One write: the HTTP upgrade and a masked text frame with a CONNECT.
    const { hostname, port } = new URL(server.httpUrl);
    const socket = net.connect(Number(port), hostname);
    const received = [];
    socket.on('data', (d) => received.push(d));
    socket.on('error', () => {});
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const request =
      'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n' +
      `Host: ${hostname}:${port}\r\n` +
      'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    const mask = [1, 2, 3, 4];
    const payload = Buffer.from('40');
    const frame = Buffer.concat([
      Buffer.from([0x81, 0x80 | payload.length, ...mask]),
      Buffer.from(payload.map((b, i) => b ^ mask[i % 4])),
    ]);
    socket.write(Buffer.concat([Buffer.from(request), frame]));
    // Server frames are unmasked: the CONNECT reply's text is in the bytes.
    const text = await waitFor(() => {
      const all = Buffer.concat(received).toString('latin1');
      return all.includes('40{"sid":') ? all : undefined;
    }, 5000, "the CONNECT reply");
    assert.match(text, /^HTTP\/1\.1 101 /);
    socket.destroy();
  });
});
