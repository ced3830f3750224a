// TLS on the client port (--tls-cert-file, --tls-key-file): the official
// socket.io-client connects over https:// long-polling, wss:// WebSocket and the
// upgrade from one to the other, to a self-signed certificate it is told to
// trust, and events travel both ways. A client that does not trust the
// certificate is refused; a plain-HTTP client gets a 400 that says why; bad
// certificate files stop the process before it listens.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { io } from 'socket.io-client';
import {
  TestClient,
  binaryPath,
  createRoomcastClient,
  httpGet,
  startStandalone,
  waitConnected,
  waitConnectError,
  waitFor,
  selfSigned,
} from './lib/index.mjs';

describe('tls on the client port', { timeout: 120_000 }, () => {
  let dir;
  let tls;
  let server;
  let httpsUrl;
  let api;
  let consumer;
  const sockets = [];

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-tls-'));
    tls = selfSigned(dir, 'server');
    server = await startStandalone([
      '--allow-anonymous',
      '--tls-cert-file', tls.cert,
      '--tls-key-file', tls.key,
    ]);
    httpsUrl = `https://127.0.0.1:${server.httpPort}`;
    api = createRoomcastClient(server.grpcAddr);
    consumer = await api.consume({ events: ['hello'] }).ready();
  });

  after(async () => {
    for (const s of sockets) s.close();
    consumer?.close();
    api?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function connect(url, options) {
    const socket = io(url, { forceNew: true, reconnection: false, ...options });
    sockets.push(socket);
    return socket;
  }

  /** An emit from the API reaches the client, and an event from the client reaches a backend. */
  async function assertEventsBothWays(client, tag) {
    await api.emit({ to: { socket_ids: [client.id] }, event: 'news', args_json: JSON.stringify([tag]) });
    await client.nextEvent('news', ([got]) => got === tag);
    client.socket.emit('hello', tag);
    await consumer.next((e) => e.socket_id === client.id && JSON.parse(e.args_json)[0] === tag);
  }

  for (const [name, transports] of [
    ['https long-polling', ['polling']],
    ['wss websocket', ['websocket']],
    ['https polling upgraded to wss', ['polling', 'websocket']],
  ]) {
    it(`${name}: socket.io-client trusting the certificate gets events both ways`, async () => {
      const socket = connect(httpsUrl, { transports, ca: tls.pem });
      const client = new TestClient(socket);
      await waitConnected(socket);
      const last = transports[transports.length - 1];
      await waitFor(() => socket.io.engine?.transport?.name === last, 5000, `the ${last} transport`);
      await assertEventsBothWays(client, name);
    });
  }

  it('a client that does not trust the certificate is refused', async () => {
    for (const transports of [['polling'], ['websocket']]) {
      const err = await waitConnectError(connect(httpsUrl, { transports }));
      assert.ok(err instanceof Error, `${transports}: ${err}`);
    }
  });

  it('plain http to the tls port is answered 400, and the port keeps serving tls', async () => {
    const res = await httpGet(`http://127.0.0.1:${server.httpPort}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 400);
    assert.match(res.body, /https/);
    const plain = connect(`http://127.0.0.1:${server.httpPort}`, { transports: ['polling'] });
    await waitConnectError(plain);
    assert.equal(plain.connected, false);

    const socket = connect(httpsUrl, { transports: ['websocket'], ca: tls.pem });
    const client = new TestClient(socket);
    await waitConnected(socket);
    await assertEventsBothWays(client, 'after plain http');
  });

  it('bad certificate settings stop the process before it listens', () => {
    const other = selfSigned(dir, 'other');
    const garbage = path.join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a certificate\n');
    const cases = [
      [['--tls-cert-file', path.join(dir, 'missing.pem'), '--tls-key-file', tls.key], /cannot read tls certificate/],
      [['--tls-cert-file', tls.cert], /tls-cert-file and tls-key-file go together/],
      [['--tls-cert-file', garbage, '--tls-key-file', tls.key], /no certificate/],
      [['--tls-cert-file', tls.cert, '--tls-key-file', other.key], /does not fit the certificate/],
    ];
    for (const [args, message] of cases) {
      const out = spawnSync(
        binaryPath(),
        ['standalone', '--allow-anonymous', '--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0',
          '--admin-listen', '127.0.0.1:0', ...args],
        { encoding: 'utf8', timeout: 20_000 },
      );
      assert.notEqual(out.status, 0, `${args.join(' ')} must fail`);
      assert.match(out.stderr, message, `${args.join(' ')}`);
      assert.doesNotMatch(out.stdout, /roomcast listening/);
    }
  });
});
