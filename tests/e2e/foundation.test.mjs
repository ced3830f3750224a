// The foundation: the official socket.io-client and a gRPC backend against one
// `roomcast standalone` process (HS256 JWTs, API key, namespaces "/" and "/admin"),
// or, with ROOMCAST_E2E_TARGET=cluster, against a cluster of three edges and a
// control plane over NATS, with the sockets spread over the edges.
// Each test opens its own sockets and uses its own event and room names.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  GrpcStatus,
  SocketPool,
  bytesOf,
  claims,
  createRoomcastClient,
  expiredClaims,
  placeholder,
  rsaKeyPair,
  settle,
  signHs256,
  signRs256,
  startTarget,
  targetKind,
  unsignedToken,
  waitConnected,
  waitFor,
  withTimeout,
} from './lib/index.mjs';

const SECRET = 'e2e-hs256-secret-with-enough-bytes-0123456789';
const API_KEY = 'e2e-api-key';
const TARGET = targetKind();

describe(`roomcast ${TARGET}`, { timeout: 180_000 }, () => {
  let server;
  let api;
  let pool;

  const token = (sub, extra) => signHs256(claims(sub, extra), SECRET);
  const asUser = (sub, extra, opts = {}) => ({ auth: { token: token(sub, extra) }, ...opts });
  const args = (...values) => JSON.stringify(values);

  before(async () => {
    server = await startTarget([
      '--namespace', '/',
      '--namespace', '/admin',
      '--jwt-secret', SECRET,
      '--api-key', API_KEY,
    ]);
    api = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
    pool = new SocketPool(server.httpUrls);
  });

  afterEach(() => pool.closeAll());

  after(async () => {
    pool?.closeAll();
    api?.close();
    await server?.stop();
  });

  describe('transports', () => {
    it('connects over WebSocket only', async () => {
      const client = await pool.connect('/', asUser('ws-user', {}, { transports: ['websocket'] }));
      assert.equal(client.socket.io.engine.transport.name, 'websocket');

      await api.emit({ to: { socket_ids: [client.id] }, event: 'hello', args_json: args('ws') });
      assert.deepEqual(await client.nextEvent('hello'), ['ws']);
    });

    it('connects over polling, then upgrades to WebSocket', async () => {
      const client = pool.open('/', asUser('upgrade-user', {}, { transports: ['polling', 'websocket'] }));
      const engine = client.socket.io.engine;
      const firstTransport = engine.transport.name;
      const upgraded = new Promise((resolve) => engine.once('upgrade', (t) => resolve(t.name)));
      await waitConnected(client.socket);

      assert.equal(firstTransport, 'polling');
      assert.equal(await withTimeout(upgraded, 5000, 'the "upgrade" event'), 'websocket');
      assert.equal(engine.transport.name, 'websocket');

      await api.emit({ to: { socket_ids: [client.id] }, event: 'hello', args_json: args('after upgrade') });
      assert.deepEqual(await client.nextEvent('hello'), ['after upgrade']);
    });
  });

  describe('JWT authentication (HS256)', () => {
    it('accepts a valid token and reports its sub as the user id', async () => {
      const consumer = await api.consume({ events: ['whoami'] }).ready();
      try {
        const client = await pool.connect('/', asUser('user-42'));
        client.socket.emit('whoami');
        const event = await consumer.next((e) => e.socket_id === client.id);
        assert.equal(event.user_id, 'user-42');
      } finally {
        consumer.close();
      }
    });

    it('refuses an expired token', async () => {
      const err = await pool.connectError('/', { auth: { token: signHs256(expiredClaims('u'), SECRET) } });
      assert.match(err.message, /expired/);
    });

    it('refuses a token signed with another secret', async () => {
      const err = await pool.connectError('/', { auth: { token: signHs256(claims('u'), 'not-the-secret') } });
      assert.match(err.message, /invalid token/);
    });

    it('refuses an unsigned token (alg "none")', async () => {
      const err = await pool.connectError('/', { auth: { token: unsignedToken(claims('u')) } });
      assert.match(err.message, /invalid token/);
    });

    it('refuses a token without "exp"', async () => {
      const { exp, ...noExp } = claims('u');
      const err = await pool.connectError('/', { auth: { token: signHs256(noExp, SECRET) } });
      assert.match(err.message, /invalid token|exp/);
    });

    it('refuses a connection without a token when anonymous access is off', async () => {
      const err = await pool.connectError('/');
      assert.match(err.message, /missing token/);
    });

    for (const transports of [['websocket'], ['polling', 'websocket']]) {
      it(`accepts a token from an Authorization header (transports: ${transports})`, async () => {
        const consumer = await api.consume({ events: ['whoami'] }).ready();
        try {
          const client = await pool.connect('/', {
            transports,
            extraHeaders: { Authorization: `Bearer ${token('header-user')}` },
          });
          client.socket.emit('whoami');
          const event = await consumer.next((e) => e.socket_id === client.id);
          assert.equal(event.user_id, 'header-user');
        } finally {
          consumer.close();
        }
      });
    }

    it('refuses a bad token from an Authorization header', async () => {
      const err = await pool.connectError('/', {
        transports: ['websocket'],
        extraHeaders: { Authorization: `Bearer ${signHs256(claims('u'), 'wrong')}` },
      });
      assert.match(err.message, /invalid token/);
    });

    it('auto-joins the rooms listed in the "rooms" claim', async () => {
      const member = await pool.connect('/', asUser('claimed', { rooms: ['team-blue', 'team-red'] }));
      const outsider = await pool.connect('/', asUser('outsider'));

      // Order is kept per room, not across rooms: settle in between.
      await api.emit({ to: { rooms: ['team-blue'] }, event: 'team-news', args_json: args('blue') });
      await settle(api, [member, outsider], { rooms: ['team-blue'] });
      await api.emit({ to: { rooms: ['team-red'] }, event: 'team-news', args_json: args('red') });
      await settle(api, [member, outsider], { rooms: ['team-red'] });

      assert.deepEqual(member.argsOf('team-news'), [['blue'], ['red']]);
      assert.equal(outsider.count('team-news'), 0);
    });
  });

  describe('gRPC API key', () => {
    it('refuses calls without the API key', async () => {
      const anonymous = createRoomcastClient(server.grpcAddr);
      try {
        await assert.rejects(anonymous.emit({ event: 'x' }), { code: GrpcStatus.UNAUTHENTICATED });
        const consumer = anonymous.consume({});
        assert.equal((await consumer.failure()).code, GrpcStatus.UNAUTHENTICATED);
      } finally {
        anonymous.close();
      }
    });

    it('refuses calls with a wrong API key', async () => {
      const wrong = createRoomcastClient(server.grpcAddr, { apiKey: 'not-the-key' });
      try {
        await assert.rejects(wrong.joinRooms({ target: {}, rooms: ['r'] }), {
          code: GrpcStatus.UNAUTHENTICATED,
        });
      } finally {
        wrong.close();
      }
    });
  });

  describe('backend emits', () => {
    let alice;
    let bob;
    let carol;

    // alice is in room "vip"; bob and carol are not.
    const connectThree = async () => {
      alice = await pool.connect('/', asUser('alice', { rooms: ['vip'] }));
      bob = await pool.connect('/', asUser('bob'));
      carol = await pool.connect('/', asUser('carol'));
    };

    it('to a room reach its members only, exactly once', async () => {
      await connectThree();
      await api.emit({ to: { rooms: ['vip'] }, event: 'news', args_json: args({ text: 'hi' }, 42) });
      await settle(api, [alice, bob, carol], { rooms: ['vip'] });

      assert.deepEqual(alice.argsOf('news'), [[{ text: 'hi' }, 42]]);
      assert.equal(bob.count('news'), 0);
      assert.equal(carol.count('news'), 0);
    });

    it('to a socket id reach that socket only, exactly once', async () => {
      await connectThree();
      await api.emit({ to: { socket_ids: [bob.id] }, event: 'direct', args_json: args('for bob') });
      await settle(api, [alice, bob, carol]);

      assert.deepEqual(bob.argsOf('direct'), [['for bob']]);
      assert.equal(alice.count('direct'), 0);
      assert.equal(carol.count('direct'), 0);
    });

    it('to the room named after a socket id reach that socket only', async () => {
      await connectThree();
      await api.emit({ to: { rooms: [carol.id] }, event: 'direct', args_json: args('for carol') });
      await settle(api, [alice, bob, carol], { rooms: [carol.id] });

      assert.deepEqual(carol.argsOf('direct'), [['for carol']]);
      assert.equal(alice.count('direct'), 0);
      assert.equal(bob.count('direct'), 0);
    });

    it('to a room and a socket id reach each target once', async () => {
      await connectThree();
      await api.emit({ to: { rooms: ['vip'], socket_ids: [alice.id, bob.id] }, event: 'union' });
      await settle(api, [alice, bob, carol], { rooms: ['vip'] });

      assert.deepEqual(alice.argsOf('union'), [[]]);
      assert.deepEqual(bob.argsOf('union'), [[]]);
      assert.equal(carol.count('union'), 0);
    });

    it('to the whole namespace except a room skip that room', async () => {
      await connectThree();
      await api.emit({ to: { except_rooms: ['vip'] }, event: 'public', args_json: args('not vip') });
      await settle(api, [alice, bob, carol]);

      assert.equal(alice.count('public'), 0);
      assert.deepEqual(bob.argsOf('public'), [['not vip']]);
      assert.deepEqual(carol.argsOf('public'), [['not vip']]);
    });

    it('to the whole namespace except a socket id skip that socket', async () => {
      await connectThree();
      await api.emit({ to: { except_socket_ids: [bob.id] }, event: 'public', args_json: args('not bob') });
      await settle(api, [alice, bob, carol]);

      assert.deepEqual(alice.argsOf('public'), [['not bob']]);
      assert.equal(bob.count('public'), 0);
      assert.deepEqual(carol.argsOf('public'), [['not bob']]);
    });

    it('refuse a reserved event name', async () => {
      await assert.rejects(api.emit({ to: {}, event: 'connect' }), { code: GrpcStatus.INVALID_ARGUMENT });
    });
  });

  describe('JoinRooms / LeaveRooms', () => {
    it('a socket joined to a room by id receives its emits until it leaves', async () => {
      const joiner = await pool.connect('/', asUser('joiner'));
      const other = await pool.connect('/', asUser('other'));

      await api.joinRooms({ target: { socket_ids: [joiner.id] }, rooms: ['lobby'] });
      await api.emit({ to: { rooms: ['lobby'] }, event: 'lobby', args_json: args(1) });
      await settle(api, [joiner, other], { rooms: ['lobby'] });
      assert.deepEqual(joiner.argsOf('lobby'), [[1]]);
      assert.equal(other.count('lobby'), 0);

      await api.leaveRooms({ target: { socket_ids: [joiner.id] }, rooms: ['lobby'] });
      await api.emit({ to: { rooms: ['lobby'] }, event: 'lobby', args_json: args(2) });
      await settle(api, [joiner, other], { rooms: ['lobby'] });
      assert.deepEqual(joiner.argsOf('lobby'), [[1]]);
      assert.equal(other.count('lobby'), 0);
    });

    it('the members of one room can be joined to another', async () => {
      const member = await pool.connect('/', asUser('member', { rooms: ['src-room'] }));
      const other = await pool.connect('/', asUser('other'));

      await api.joinRooms({ target: { rooms: ['src-room'] }, rooms: ['dst-room'] });
      await api.emit({ to: { rooms: ['dst-room'] }, event: 'dst', args_json: args('moved') });
      await settle(api, [member, other], { rooms: ['dst-room'] });

      assert.deepEqual(member.argsOf('dst'), [['moved']]);
      assert.equal(other.count('dst'), 0);
    });
  });

  describe('client events', () => {
    it('an event with an ack reaches ConsumeEvents, and Reply answers the ack', async () => {
      const consumer = await api.consume({ events: ['ask', 'ask-done'] }).ready();
      try {
        const client = await pool.connect('/', asUser('asker'));
        const before = Date.now();
        const acked = client.emitWithAckArgs('ask', { q: 'ping' }, 7);

        const event = await consumer.next((e) => e.socket_id === client.id && e.event === 'ask');
        assert.equal(event.user_id, 'asker');
        assert.equal(event.namespace, '/');
        assert.deepEqual(JSON.parse(event.args_json), [{ q: 'ping' }, 7]);
        assert.deepEqual(event.attachments, []);
        assert.notEqual(event.ack_id, undefined, 'ack_id must be set');
        assert.notEqual(event.reply_to, '');
        const receivedAt = Number(event.received_at_ms);
        assert.ok(receivedAt >= before - 1000 && receivedAt <= Date.now() + 1000, `received_at_ms ${receivedAt}`);

        await api.reply({
          reply_to: event.reply_to,
          socket_id: event.socket_id,
          namespace: event.namespace,
          ack_id: event.ack_id,
          args_json: args('pong', { n: 1 }),
        });
        assert.deepEqual(await acked, ['pong', { n: 1 }]);

        // Exactly once: a later event from the same socket arrives after it, alone.
        client.socket.emit('ask-done');
        await consumer.next((e) => e.socket_id === client.id && e.event === 'ask-done');
        assert.equal(consumer.matching((e) => e.socket_id === client.id && e.event === 'ask').length, 1);
      } finally {
        consumer.close();
      }
    });

    it('an event without an ack reaches ConsumeEvents without an ack id', async () => {
      const consumer = await api.consume({ events: ['note'] }).ready();
      try {
        const client = await pool.connect('/', asUser('noter'));
        client.socket.emit('note', 'just saying', [1, 2, 3]);

        const event = await consumer.next((e) => e.socket_id === client.id);
        assert.equal(event.event, 'note');
        assert.deepEqual(JSON.parse(event.args_json), ['just saying', [1, 2, 3]]);
        assert.equal(event.ack_id, undefined, 'ack_id must be unset');
      } finally {
        consumer.close();
      }
    });

    it('ConsumeEvents only delivers the event names it asked for', async () => {
      const consumer = await api.consume({ events: ['wanted'] }).ready();
      try {
        const client = await pool.connect('/', asUser('filterer'));
        client.socket.emit('unwanted', 1);
        client.socket.emit('wanted', 2);

        await consumer.next((e) => e.socket_id === client.id);
        assert.deepEqual(
          consumer.matching((e) => e.socket_id === client.id).map((e) => e.event),
          ['wanted'],
        );
      } finally {
        consumer.close();
      }
    });
  });

  describe('binary attachments', () => {
    const photo = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const thumb = Buffer.from('thumbnail bytes');

    for (const transports of [['websocket'], ['polling']]) {
      it(`from gRPC reach the client as binary (transports: ${transports})`, async () => {
        const client = await pool.connect('/', asUser('binary-reader', {}, { transports }));
        await api.emit({
          to: { socket_ids: [client.id] },
          event: 'file',
          args_json: args('photo', placeholder(0), { meta: { thumb: placeholder(1) } }),
          attachments: [photo, thumb],
        });

        const [name, data, { meta }] = await client.nextEvent('file');
        assert.equal(name, 'photo');
        assert.deepEqual(bytesOf(data), photo);
        assert.deepEqual(bytesOf(meta.thumb), thumb);
      });

      it(`from the client reach ConsumeEvents as attachments (transports: ${transports})`, async () => {
        const consumer = await api.consume({ events: ['upload'] }).ready();
        try {
          const client = await pool.connect('/', asUser('binary-writer', {}, { transports }));
          const first = Buffer.from([0, 1, 2, 253, 254, 255]);
          client.socket.emit('upload', 'doc', first, { part: Buffer.from('second') });

          const event = await consumer.next((e) => e.socket_id === client.id);
          assert.deepEqual(JSON.parse(event.args_json), ['doc', placeholder(0), { part: placeholder(1) }]);
          assert.deepEqual(event.attachments, [first, Buffer.from('second')]);
        } finally {
          consumer.close();
        }
      });
    }

    it('in a Reply reach the ack callback as binary', async () => {
      const consumer = await api.consume({ events: ['fetch'] }).ready();
      try {
        const client = await pool.connect('/', asUser('fetcher'));
        const acked = client.emitWithAckArgs('fetch', 'photo');
        const event = await consumer.next((e) => e.socket_id === client.id);
        await api.reply({
          reply_to: event.reply_to,
          socket_id: event.socket_id,
          namespace: event.namespace,
          ack_id: event.ack_id,
          args_json: args({ name: 'photo', data: placeholder(0) }),
          attachments: [photo],
        });

        const [reply] = await acked;
        assert.equal(reply.name, 'photo');
        assert.deepEqual(bytesOf(reply.data), photo);
      } finally {
        consumer.close();
      }
    });
  });

  describe('namespaces', () => {
    it('emits to /admin reach /admin sockets only, and emits to / reach / sockets only', async () => {
      const root = await pool.connect('/', asUser('root-user'));
      const admin = await pool.connect('/admin', asUser('admin-user'));
      // One Engine.IO connection carrying both namespaces.
      const mux = pool.manager();
      const muxRoot = await mux.connect('/', { auth: { token: token('mux-user') } });
      const muxAdmin = await mux.connect('/admin', { auth: { token: token('mux-user') } });

      await api.emit({ to: { namespace: '/admin' }, event: 'ns-news', args_json: args('admin') });
      await api.emit({ to: { namespace: '/' }, event: 'ns-news', args_json: args('root') });
      await settle(api, [root, admin, muxRoot, muxAdmin], ['/', '/admin']);

      assert.deepEqual(root.argsOf('ns-news'), [['root']]);
      assert.deepEqual(muxRoot.argsOf('ns-news'), [['root']]);
      assert.deepEqual(admin.argsOf('ns-news'), [['admin']]);
      assert.deepEqual(muxAdmin.argsOf('ns-news'), [['admin']]);
    });

    it('ConsumeEvents reports the namespace and can filter by it', async () => {
      const consumer = await api.consume({ namespace: '/admin', events: ['ns-event'] }).ready();
      try {
        const root = await pool.connect('/', asUser('root-user'));
        const admin = await pool.connect('/admin', asUser('admin-user'));
        root.socket.emit('ns-event', 'from root');
        admin.socket.emit('ns-event', 'from admin');

        const event = await consumer.next((e) => e.socket_id === admin.id);
        assert.equal(event.namespace, '/admin');
        assert.deepEqual(JSON.parse(event.args_json), ['from admin']);
        assert.equal(consumer.matching((e) => e.socket_id === root.id).length, 0);
      } finally {
        consumer.close();
      }
    });

    it('refuses an unknown namespace with "Invalid namespace"', async () => {
      const err = await pool.connectError('/nope', asUser('lost'));
      assert.equal(err.message, 'Invalid namespace');
    });
  });

  describe('ordering', () => {
    it('a room receives 200 emits in the order they were sent', async () => {
      const first = await pool.connect('/', asUser('reader-1', { rooms: ['ordered'] }));
      const second = await pool.connect(
        '/',
        asUser('reader-2', { rooms: ['ordered'] }, { transports: ['websocket'] }),
      );
      const expected = Array.from({ length: 200 }, (_, i) => i);
      for (const i of expected) {
        await api.emit({ to: { rooms: ['ordered'] }, event: 'seq', args_json: args(i) });
      }

      for (const client of [first, second]) {
        await waitFor(() => client.count('seq') >= expected.length, 10_000, `200 "seq" events`);
        assert.deepEqual(client.argsOf('seq').map(([i]) => i), expected);
      }
    });
  });

  // Last: it restarts the shared server (in a cluster: every edge).
  describe('restart', () => {
    it('a client reconnects by itself after a server restart and gets new emits', async () => {
      const client = await pool.connect('/', {
        ...asUser('comeback'),
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
      });
      const firstId = client.id;
      const disconnects = [];
      client.socket.on('disconnect', (reason) => disconnects.push(reason));

      for (const exit of await server.stopEdges()) {
        assert.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM exits cleanly');
      }
      await waitFor(() => disconnects.length > 0, 5000, 'the client to notice the server went away');
      assert.notEqual(disconnects[0], 'io server disconnect', 'a shutdown must let clients reconnect');

      await server.restart();
      await waitFor(() => client.socket.connected, 10_000, 'the client to reconnect');
      assert.notEqual(client.id, firstId);

      // The old channel's backoff may still be running: use a fresh one.
      api.close();
      api = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
      await api.emit({ to: {}, event: 'welcome-back', args_json: args(client.id) });
      assert.deepEqual(await client.nextEvent('welcome-back'), [client.id]);
    });
  });
});

describe(`roomcast ${TARGET} with RS256 JWTs`, { timeout: 60_000 }, () => {
  let server;
  let api;
  let pool;
  let keys;

  const AUDIENCE = 'roomcast-e2e';
  const ISSUER = 'e2e-issuer';
  const rsToken = (sub, extra = {}, key = keys.privateKey) =>
    signRs256(claims(sub, { aud: AUDIENCE, iss: ISSUER, ...extra }), key);

  before(async () => {
    keys = rsaKeyPair();
    server = await startTarget([
      '--jwt-public-key-file', keys.publicKeyPath,
      '--jwt-audience', AUDIENCE,
      '--jwt-issuer', ISSUER,
      '--jwt-rooms-claim', 'groups',
    ]);
    api = createRoomcastClient(server.grpcAddr);
    pool = new SocketPool(server.httpUrls);
  });

  afterEach(() => pool.closeAll());

  after(async () => {
    pool?.closeAll();
    api?.close();
    await server?.stop();
    keys?.cleanup();
  });

  it('accepts a valid RS256 token and reports its sub as the user id', async () => {
    const consumer = await api.consume({ events: ['whoami'] }).ready();
    try {
      const client = await pool.connect('/', { auth: { token: rsToken('rsa-user') } });
      client.socket.emit('whoami');
      const event = await consumer.next((e) => e.socket_id === client.id);
      assert.equal(event.user_id, 'rsa-user');
    } finally {
      consumer.close();
    }
  });

  it('refuses a token signed with another RSA key', async () => {
    const other = rsaKeyPair();
    other.cleanup();
    const err = await pool.connectError('/', { auth: { token: rsToken('u', {}, other.privateKey) } });
    assert.match(err.message, /invalid token/);
  });

  it('refuses an HS256 token whose secret is the public key (algorithm confusion)', async () => {
    const forged = signHs256(claims('u', { aud: AUDIENCE, iss: ISSUER }), keys.publicKeyPem);
    const err = await pool.connectError('/', { auth: { token: forged } });
    assert.match(err.message, /invalid token/);
  });

  it('refuses a token for another audience', async () => {
    const err = await pool.connectError('/', { auth: { token: rsToken('u', { aud: 'someone-else' }) } });
    assert.match(err.message, /invalid token|audience/);
  });

  it('refuses a token from another issuer', async () => {
    const err = await pool.connectError('/', { auth: { token: rsToken('u', { iss: 'mallory' }) } });
    assert.match(err.message, /invalid token|issuer/);
  });

  it('auto-joins the rooms of the configured rooms claim ("groups")', async () => {
    const member = await pool.connect('/', { auth: { token: rsToken('grouped', { groups: ['g1'] }) } });
    const other = await pool.connect('/', { auth: { token: rsToken('plain', { rooms: ['g1'] }) } });

    await api.emit({ to: { rooms: ['g1'] }, event: 'group-news', args_json: '["g1"]' });
    await settle(api, [member, other], { rooms: ['g1'] });

    assert.deepEqual(member.argsOf('group-news'), [['g1']]);
    assert.equal(other.count('group-news'), 0, 'the default "rooms" claim is not used when another is configured');
  });
});
