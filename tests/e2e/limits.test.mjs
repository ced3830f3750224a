// Limits on what one client may cost an edge, seen from the client: each limit is
// configured low, hit, and the client gets the documented answer (a close code, an
// HTTP status, a connect_error, a gRPC error); /metrics counts it; well-behaved
// clients alongside are unaffected. Also JWT pitfalls, through the real
// socket.io-client, each refused with a clear connect_error message.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  GrpcStatus,
  RawSocket,
  SocketPool,
  claims,
  createRoomcastClient,
  fetchMetrics,
  rsaKeyPair,
  signHs256,
  signRs256,
  startCluster,
  startStandalone,
  unsignedToken,
  waitFor,
  useBystanderServer,
} from './lib/index.mjs';

const SECRET = 'limits-e2e-hs256-secret-0123456789';
const token = (sub, extra = {}) => signHs256(claims(sub, extra), SECRET);

/** The value of a counter series (0 when absent). */
async function counter(server, series) {
  return (await fetchMetrics(server.adminUrl)).get(series) ?? 0;
}

/** Records the reason of the client's disconnect on `client.disconnectReason`. */
function trackDisconnect(client) {
  client.socket.on('disconnect', (reason) => {
    client.disconnectReason = reason;
  });
  return client;
}

const limitHits = (limit) => `roomcast_edge_limit_hits_total{limit="${limit}"}`;
const disconnects = (reason) => `roomcast_edge_disconnects_total{reason="${reason}"}`;

/** Waits until a counter went past `before`. */
function counterRises(server, series, before) {
  return waitFor(async () => (await counter(server, series)) > before, 5000, `${series} to rise`, 50);
}

describe('per-connection limits', { timeout: 120_000 }, () => {
  const MAX_PAYLOAD = 1000;
  let server;
  let api;
  let pool;
  let bystander;

  const state = useBystanderServer([
    '--allow-anonymous',
    '--jwt-secret', SECRET,
    '--max-payload', String(MAX_PAYLOAD),
    '--max-attachments', '2',
    '--max-rooms-per-socket', '3',
    '--ws-pings-per-sec', '5',
    '--packets-per-sec', '20',
    '--max-request-headers', '24',
    '--max-request-head-bytes', '4096',
  ]);
  before(() => ({ server, api, pool, bystander } = state));

  const bystanderStillServed = () => state.stillServes();

  async function rawConnected() {
    const raw = await RawSocket.connect(server.httpUrl);
    raw.sid = await raw.connectNamespace('/');
    return raw;
  }

  it('a WebSocket message over max payload is closed with 1009', async () => {
    const before = await counter(server, limitHits('max_payload'));
    const raw = await rawConnected();
    try {
      raw.send(`42["big","${'x'.repeat(2 * MAX_PAYLOAD)}"]`);
      assert.deepEqual(await raw.waitClosed(), { code: 1009, reason: 'message_too_big' });
    } finally {
      raw.terminate();
    }
    await counterRises(server, limitHits('max_payload'), before);
    await bystanderStillServed();
  });

  it('a fragmented WebSocket message whose fragments add up over max payload is closed with 1009', async () => {
    const raw = await rawConnected();
    try {
      // Each fragment is under the limit; together they are not.
      const part = 'x'.repeat(MAX_PAYLOAD / 2);
      raw.ws.send(`42["big","${part}`, { fin: false });
      raw.ws.send(part, { fin: false });
      raw.ws.send(`${part}"]`, { fin: true });
      assert.deepEqual(await raw.waitClosed(), { code: 1009, reason: 'message_too_big' });
    } finally {
      raw.terminate();
    }
    await bystanderStillServed();
  });

  it('a fragmented message under max payload is reassembled and delivered', async () => {
    const consumer = await api.consume({ events: ['pieces'] }).ready();
    const raw = await rawConnected();
    try {
      raw.ws.send('42["pieces",', { fin: false });
      raw.ws.send('"a', { fin: false });
      raw.ws.send('b"]', { fin: true });
      const event = await consumer.next((e) => e.socket_id === raw.sid);
      assert.deepEqual(JSON.parse(event.args_json), ['ab']);
      assert.ok(raw.isOpen);
    } finally {
      consumer.close();
      raw.terminate();
    }
  });

  it('a packet with more binary attachments than allowed closes the connection', async () => {
    const before = await counter(server, limitHits('max_attachments'));
    const raw = await rawConnected();
    try {
      raw.send('453-["files",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]');
      assert.deepEqual(await raw.waitClosed(), { code: 1002, reason: 'protocol_error' });
    } finally {
      raw.terminate();
    }
    await counterRises(server, limitHits('max_attachments'), before);
    await bystanderStillServed();
  });

  it('a packet with as many attachments as allowed goes through', async () => {
    const consumer = await api.consume({ events: ['two-files'] }).ready();
    try {
      const client = await pool.connect('/', { transports: ['websocket'] });
      client.socket.emit('two-files', Buffer.from('a'), Buffer.from('b'));
      const event = await consumer.next((e) => e.socket_id === client.id);
      assert.equal(event.attachments.length, 2);
    } finally {
      consumer.close();
    }
  });

  it('an event name over 256 bytes closes the connection', async () => {
    const before = await counter(server, limitHits('max_event_name_bytes'));
    const raw = await rawConnected();
    try {
      raw.send(`42["${'e'.repeat(300)}"]`);
      await raw.waitClosed();
    } finally {
      raw.terminate();
    }
    await counterRises(server, limitHits('max_event_name_bytes'), before);
    await bystanderStillServed();
  });

  it('a WebSocket ping flood is closed with 1008 and reason "flood"', async () => {
    const before = await counter(server, disconnects('flood'));
    const raw = await rawConnected();
    try {
      // 5 per second, bursts of 10: 50 back to back is a flood.
      for (let i = 0; i < 50 && raw.isOpen; i++) raw.ws.ping();
      assert.deepEqual(await raw.waitClosed(), { code: 1008, reason: 'flood' });
    } finally {
      raw.terminate();
    }
    await counterRises(server, disconnects('flood'), before);
    assert.ok((await counter(server, limitHits('ws_pings_per_sec'))) > 0);
    await bystanderStillServed();
  });

  it('a few WebSocket pings are answered and do not close the connection', async () => {
    const raw = await rawConnected();
    try {
      let pongs = 0;
      raw.ws.on('pong', () => pongs++);
      for (let i = 0; i < 3; i++) raw.ws.ping();
      await waitFor(() => pongs === 3, 5000, 'three pongs');
      await api.emit({ to: { socket_ids: [raw.sid] }, event: 'after-pings', args_json: '[1]' });
      await raw.nextFrame((f) => f === '42["after-pings",1]');
    } finally {
      raw.terminate();
    }
  });

  it('an Engine.IO packet flood is closed with 1008 and reason "flood"', async () => {
    const before = await counter(server, limitHits('packets_per_sec'));
    const raw = await rawConnected();
    try {
      // 20 per second, bursts of 40: 200 back to back is a flood.
      for (let i = 0; i < 200 && raw.isOpen; i++) raw.send('42["chatter"]');
      assert.deepEqual(await raw.waitClosed(), { code: 1008, reason: 'flood' });
    } finally {
      raw.terminate();
    }
    await counterRises(server, limitHits('packets_per_sec'), before);
    await bystanderStillServed();
  });

  it('an Engine.IO packet flood in one polling POST gets 400 and ends the session', async () => {
    const url = (q) => `${server.httpUrl}/socket.io/?EIO=4&transport=polling${q}`;
    const open = await fetch(url(''), { signal: AbortSignal.timeout(5000) });
    const sid = JSON.parse((await open.text()).slice(1)).sid;
    const post = (body) =>
      fetch(url(`&sid=${sid}`), { method: 'POST', body, signal: AbortSignal.timeout(5000) });
    const connect = await post('40');
    assert.equal(connect.status, 200);
    await connect.text();
    const flood = await post(Array.from({ length: 60 }, () => '42["c"]').join('\x1e'));
    assert.equal(flood.status, 400);
    await flood.text();
    const again = await fetch(url(`&sid=${sid}`), { signal: AbortSignal.timeout(5000) });
    assert.equal(again.status, 400, 'the session is gone');
    await again.text();
  });

  it('a JWT rooms claim over the rooms-per-socket limit is refused with a connect_error', async () => {
    const err = await pool.connectError('/', { auth: { token: token('many', { rooms: ['a', 'b', 'c', 'd'] }) } });
    assert.match(err.message, /too many rooms: 4 exceed the limit of 3 per socket/);
    const ok = await pool.connect('/', { auth: { token: token('three', { rooms: ['a', 'b', 'c'] }) } });
    assert.ok(ok.socket.connected);
  });

  it('JoinRooms beyond the rooms-per-socket limit fails with FAILED_PRECONDITION and joins nothing', async () => {
    const client = await pool.connect('/', { auth: { token: token('joiner', { rooms: ['r1', 'r2'] }) } });
    await assert.rejects(
      api.joinRooms({ target: { socket_ids: [client.id] }, rooms: ['r3', 'r4'] }),
      (err) => {
        assert.equal(err.code, GrpcStatus.FAILED_PRECONDITION, `code ${err.code}: ${err.details}`);
        assert.match(err.details, /rooms-per-socket limit/);
        return true;
      },
    );
    const { sockets } = await api.fetchSockets({ target: { socket_ids: [client.id] } });
    assert.deepEqual(sockets[0].rooms.filter((r) => r !== client.id).sort(), ['r1', 'r2']);
    // Up to the limit is fine, and rooms it is in already do not count twice.
    await api.joinRooms({ target: { socket_ids: [client.id] }, rooms: ['r1', 'r3'] });
    const after = await api.fetchSockets({ target: { socket_ids: [client.id] } });
    assert.deepEqual(after.sockets[0].rooms.filter((r) => r !== client.id).sort(), ['r1', 'r2', 'r3']);
  });

  describe('request heads', () => {
    const handshake = (init = {}, query = '') =>
      fetch(`${server.httpUrl}/socket.io/?EIO=4&transport=polling${query}`, {
        signal: AbortSignal.timeout(5000),
        ...init,
      });

    it('more headers than allowed get 431', async () => {
      const before = await counter(server, limitHits('max_request_headers'));
      const headers = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`x-filler-${i}`, 'v']));
      const res = await handshake({ headers });
      assert.equal(res.status, 431);
      await res.text();
      await counterRises(server, limitHits('max_request_headers'), before);
    });

    it('a header block over the byte limit gets 431', async () => {
      const res = await handshake({ headers: { 'x-big': 'x'.repeat(5000) } });
      assert.equal(res.status, 431);
      await res.text();
    });

    it('a query string over the byte limit gets 431', async () => {
      const res = await handshake({}, `&pad=${'q'.repeat(5000)}`);
      assert.equal(res.status, 431);
      await res.text();
    });

    it('a huge Authorization header is refused before the token is looked at', async () => {
      const err = await pool.connectError('/', {
        transports: ['polling'],
        extraHeaders: { Authorization: `Bearer ${'t'.repeat(8000)}` },
      });
      assert.ok(err, 'the handshake fails');
      const res = await handshake({ headers: { authorization: `Bearer ${'t'.repeat(8000)}` } });
      assert.equal(res.status, 431);
      await res.text();
    });

    it('an ordinary handshake is unaffected', async () => {
      const res = await handshake({ headers: { 'x-one': '1' } });
      assert.equal(res.status, 200);
      assert.equal((await res.text())[0], '0');
    });
  });
});

describe('per-address limits', { timeout: 60_000 }, () => {
  describe('connections per address', () => {
    let server;
    let pool;

    before(async () => {
      server = await startStandalone(['--allow-anonymous', '--max-connections-per-ip', '3']);
      pool = new SocketPool(server.httpUrl);
    });

    after(async () => {
      pool?.closeAll();
      await server?.stop();
    });

    it('the connection over the limit gets 429; closing one makes room', async () => {
      const clients = [];
      for (let i = 0; i < 3; i++) clients.push(await pool.connect('/', { transports: ['websocket'] }));
      const res = await fetch(`${server.httpUrl}/socket.io/?EIO=4&transport=polling`, {
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(res.status, 429);
      assert.match(await res.text(), /too many connections from this address/);
      const err = await pool.connectError('/', { transports: ['websocket'] });
      assert.ok(err, 'socket.io-client gets a connect_error');
      assert.ok((await counter(server, limitHits('max_connections_per_ip'))) >= 2);

      clients[0].socket.close();
      const next = await waitFor(
        async () => {
          const r = await fetch(`${server.httpUrl}/socket.io/?EIO=4&transport=polling`, {
            signal: AbortSignal.timeout(5000),
          });
          await r.text();
          return r.status === 200 ? r : null;
        },
        5000,
        'a slot to free up',
        50,
      );
      assert.equal(next.status, 200);
    });
  });

  describe('handshakes per second per address', () => {
    let server;

    before(async () => {
      server = await startStandalone(['--allow-anonymous', '--handshakes-per-ip-per-sec', '2']);
    });

    after(async () => {
      await server?.stop();
    });

    it('a burst of handshakes beyond the rate gets 429 with Retry-After, then the rate recovers', async () => {
      const statuses = [];
      let refused;
      for (let i = 0; i < 10; i++) {
        const res = await fetch(`${server.httpUrl}/socket.io/?EIO=4&transport=polling`, {
          signal: AbortSignal.timeout(5000),
        });
        statuses.push(res.status);
        if (res.status === 429) refused = { retry: res.headers.get('retry-after'), body: await res.text() };
        else await res.text();
      }
      assert.ok(statuses.includes(200) && statuses.includes(429), `statuses: ${statuses}`);
      assert.equal(refused.retry, '1');
      assert.match(refused.body, /too many new connections/);
      assert.ok((await counter(server, limitHits('handshakes_per_ip_per_sec'))) > 0);
      await waitFor(
        async () => {
          const r = await fetch(`${server.httpUrl}/socket.io/?EIO=4&transport=polling`, {
            signal: AbortSignal.timeout(5000),
          });
          await r.text();
          return r.status === 200;
        },
        5000,
        'the rate to allow a handshake again',
        100,
      );
    });
  });
});

describe('slow consumers', { timeout: 120_000 }, () => {
  const QUEUE = 256 * 1024;
  let server;
  let api;
  let pool;

  before(async () => {
    server = await startStandalone([
      '--allow-anonymous',
      '--max-payload', String(64 * 1024),
      '--outbound-queue-bytes', String(QUEUE),
    ]);
    api = createRoomcastClient(server.grpcAddr);
    pool = new SocketPool(server.httpUrl);
  });

  after(async () => {
    pool?.closeAll();
    api?.close();
    await server?.stop();
  });

  it('a socket that stops reading is disconnected as a slow consumer; its room mate gets everything', async () => {
    const reader = await pool.connect('/', { transports: ['websocket'] });
    const raw = await RawSocket.connect(server.httpUrl);
    const rawSid = await raw.connectNamespace('/');
    try {
      await api.joinRooms({ target: { socket_ids: [reader.id, rawSid] }, rooms: ['busy'] });
      const before = await counter(server, disconnects('slow_consumer'));
      // The raw client stops reading: the kernel buffers, then its queue, fill.
      raw.ws._socket.pause();
      const chunk = 'x'.repeat(32 * 1024);
      let sent = 0;
      await waitFor(
        async () => {
          sent += 1;
          await api.emit({ to: { rooms: ['busy'] }, event: 'load', args_json: JSON.stringify([sent, chunk]) });
          // The reader keeps up with every emit before the next one.
          await reader.nextEvent('load', ([n]) => n === sent, 10_000);
          return (await counter(server, disconnects('slow_consumer'))) > before;
        },
        90_000,
        'the paused socket to be disconnected as a slow consumer',
        0,
      );
      assert.ok(sent > QUEUE / chunk.length, `disconnected after ${sent} emits of 32 KiB`);
      assert.ok((await counter(server, limitHits('outbound_queue_bytes'))) > 0);

      // The slow socket is gone from the room; the reader got every emit, in order.
      await waitFor(
        async () => {
          const { sockets } = await api.fetchSockets({ target: { rooms: ['busy'] } });
          return sockets.length === 1 && sockets[0].id === reader.id;
        },
        5000,
        'the slow socket to leave the room',
        50,
      );
      assert.deepEqual(reader.argsOf('load').map(([n]) => n), Array.from({ length: sent }, (_, i) => i + 1));
      await api.emit({ to: { rooms: ['busy'] }, event: 'after', args_json: '[1]' });
      await reader.nextEvent('after');

      // Reading again, the raw client finds what was queued, then a close with 1008.
      raw.ws._socket.resume();
      assert.deepEqual(await raw.waitClosed(30_000), { code: 1008, reason: 'slow_consumer' });
    } finally {
      raw.terminate();
    }
  });
});

describe('JWT pitfalls through socket.io-client', { timeout: 60_000 }, () => {
  const AUDIENCE = 'limits-e2e';
  const ISSUER = 'limits-issuer';
  let server;
  let rsServer;
  let keys;
  let pool;
  let rsPool;
  const good = (extra = {}) => claims('u', { aud: AUDIENCE, iss: ISSUER, ...extra });
  const refusal = async (p, tok) => (await p.connectError('/', { auth: { token: tok } })).message;

  before(async () => {
    keys = rsaKeyPair();
    server = await startStandalone([
      '--jwt-secret', SECRET,
      '--jwt-audience', AUDIENCE,
      '--jwt-issuer', ISSUER,
      '--jwt-leeway-secs', '30',
    ]);
    rsServer = await startStandalone([
      '--jwt-public-key-file', keys.publicKeyPath,
      '--jwt-audience', AUDIENCE,
      '--jwt-issuer', ISSUER,
    ]);
    pool = new SocketPool(server.httpUrl);
    rsPool = new SocketPool(rsServer.httpUrl);
  });

  afterEach(() => {
    pool.closeAll();
    rsPool.closeAll();
  });

  after(async () => {
    await server?.stop();
    await rsServer?.stop();
    keys?.cleanup();
  });

  it('a valid token connects (control)', async () => {
    const client = await pool.connect('/', { auth: { token: signHs256(good(), SECRET) } });
    assert.ok(client.socket.connected);
  });

  it('alg "none" is refused: algorithm not allowed', async () => {
    assert.equal(await refusal(pool, unsignedToken(good())), 'invalid token: algorithm not allowed');
  });

  it('an HS256 token signed with the RS256 public key is refused: algorithm not allowed', async () => {
    const forged = signHs256(good(), keys.publicKeyPem);
    assert.equal(await refusal(rsPool, forged), 'invalid token: algorithm not allowed');
  });

  it('a token expired within the leeway is accepted; beyond it, refused: token expired', async () => {
    const now = Math.floor(Date.now() / 1000);
    const within = await pool.connect('/', { auth: { token: signHs256(good({ exp: now - 5 }), SECRET) } });
    assert.ok(within.socket.connected);
    assert.equal(
      await refusal(pool, signHs256(good({ exp: now - 120 }), SECRET)),
      'invalid token: token expired',
    );
  });

  it('a wrong audience is refused: wrong audience', async () => {
    assert.equal(await refusal(pool, signHs256(good({ aud: 'other' }), SECRET)), 'invalid token: wrong audience');
  });

  it('a wrong issuer is refused: wrong issuer', async () => {
    assert.equal(await refusal(pool, signHs256(good({ iss: 'mallory' }), SECRET)), 'invalid token: wrong issuer');
  });

  // A configured audience or issuer is required: a token that lacks the claim
  // (or carries null) is refused like one that names another, with both
  // algorithms, while a token with both connects.
  for (const [alg, sign, which] of [
    ['HS256', (c) => signHs256(c, SECRET), () => pool],
    ['RS256', (c) => signRs256(c, keys.privateKey), () => rsPool],
  ]) {
    it(`${alg}: a token without aud or iss is refused, for every combination`, async () => {
      const { aud, iss, ...neither } = good();
      const cases = [
        [{ ...neither, iss }, 'invalid token: wrong audience'],
        [{ ...neither, iss, aud: null }, 'invalid token: wrong audience'],
        [{ ...neither, aud }, 'invalid token: wrong issuer'],
        [{ ...neither, aud, iss: null }, 'invalid token: wrong issuer'],
        [neither, 'invalid token: wrong audience'],
        [{ ...neither, aud: null, iss: null }, 'invalid token: wrong audience'],
      ];
      for (const [c, message] of cases) {
        assert.equal(await refusal(which(), sign(c)), message, JSON.stringify(c));
      }
      const ok = await which().connect('/', { auth: { token: sign(good()) } });
      assert.ok(ok.socket.connected);
    });
  }

  it('a token without exp is refused: missing claim exp', async () => {
    const { exp, ...noExp } = good();
    assert.equal(await refusal(pool, signHs256(noExp, SECRET)), 'invalid token: missing claim exp');
  });

  it('a huge token is refused before it is decoded: token is too long', async () => {
    const huge = signHs256(good({ pad: 'p'.repeat(10_000) }), SECRET);
    assert.equal(await refusal(pool, huge), 'invalid token: token is too long');
  });
});

describe('token expiry during a session', { timeout: 60_000 }, () => {
  let server;
  let pool;

  before(async () => {
    server = await startStandalone(['--jwt-secret', SECRET, '--jwt-leeway-secs', '0', '--disconnect-on-token-expiry']);
    pool = new SocketPool(server.httpUrl);
  });

  after(async () => {
    pool?.closeAll();
    await server?.stop();
  });

  it('a socket is disconnected by the server when its token expires; a longer-lived one stays', async () => {
    const now = Math.floor(Date.now() / 1000);
    const before = await counter(server, disconnects('token_expired'));
    const shortLived = trackDisconnect(
      await pool.connect('/', { auth: { token: signHs256(claims('short', { exp: now + 2 }), SECRET) } }),
    );
    const longLived = await pool.connect('/', { auth: { token: token('long') } });
    const reason = await waitFor(() => shortLived.disconnectReason, 10_000, 'the short-lived socket to be disconnected');
    assert.equal(reason, 'io server disconnect');
    assert.ok(Date.now() / 1000 >= now + 2, 'not before its exp');
    await counterRises(server, disconnects('token_expired'), before);
    assert.ok(longLived.socket.connected);
  });

  it('the connection of an expired token closes with 1008, reason token_expired', async () => {
    const now = Math.floor(Date.now() / 1000);
    const raw = await RawSocket.connect(server.httpUrl);
    try {
      await raw.connectNamespace('/', { token: signHs256(claims('raw-short', { exp: now + 2 }), SECRET) });
      await raw.nextFrame((f) => f === '41', 10_000);
      assert.deepEqual(await raw.waitClosed(10_000), { code: 1008, reason: 'token_expired' });
    } finally {
      raw.terminate();
    }
  });
});

describe('rooms per socket across a cluster', { timeout: 90_000 }, () => {
  let cluster;
  let api;
  let pool;

  before(async () => {
    cluster = await startCluster({
      edges: 2,
      edgeArgs: ['--allow-anonymous', '--max-rooms-per-socket', '2'],
    });
    api = createRoomcastClient(cluster.grpcAddr);
    pool = new SocketPool(cluster.httpUrls);
  });

  after(async () => {
    pool?.closeAll();
    api?.close();
    await cluster?.stop();
  });

  it('a JoinRooms that would take a socket on any edge over the limit fails; the others join', async () => {
    const full = await pool.connectAt(0, '/', { transports: ['websocket'] });
    const empty = await pool.connectAt(1, '/', { transports: ['websocket'] });
    await api.joinRooms({ target: { socket_ids: [full.id] }, rooms: ['x', 'y'] });
    await assert.rejects(
      api.joinRooms({ target: { socket_ids: [full.id, empty.id] }, rooms: ['z'] }),
      (err) => {
        assert.equal(err.code, GrpcStatus.FAILED_PRECONDITION, `code ${err.code}: ${err.details}`);
        assert.match(err.details, /1 of the selected sockets would exceed the rooms-per-socket limit and did not join \(1 did\)/);
        return true;
      },
    );
    const { sockets } = await api.fetchSockets({ target: { rooms: ['z'] } });
    assert.deepEqual(sockets.map((s) => s.id), [empty.id]);
  });
});
