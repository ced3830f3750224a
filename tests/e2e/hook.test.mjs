// The connect hook: edges started with --connect-hook-url ask a backend's
// roomcast.v1.ConnectHook service (served here by grpc-js from the test process)
// whether each Socket.IO CONNECT may proceed, instead of checking a JWT. Runs
// against `roomcast standalone`, or, with ROOMCAST_E2E_TARGET=cluster, against
// three edges (each given the hook) and a control plane over NATS.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  GrpcStatus,
  SocketPool,
  allowAll,
  createRoomcastClient,
  delayAnswer,
  grpcError,
  runCli,
  startConnectHook,
  startTarget,
  targetKind,
  waitConnected,
  waitFor,
} from './lib/index.mjs';

const API_KEY = 'e2e-hook-api-key';
const HOOK_TIMEOUT_MS = 1000;
const TARGET = targetKind();

const sorted = (list) => [...list].sort();

describe(`connect hook against roomcast ${TARGET}`, { timeout: 180_000 }, () => {
  let hook;
  let server;
  let api;
  let pool;

  /** The node id the hook and FetchSockets must report for a client, when the target tells. */
  const nodeOf = (client) =>
    server.kind === 'cluster' ? server.edges.find((e) => e.httpUrl === client.httpUrl).nodeId : undefined;
  /** The hook's requests whose auth object has `marker` as its `marker` field. */
  const requestsMarked = (marker) =>
    hook.requests.filter((r) => r.auth_json && JSON.parse(r.auth_json).marker === marker);

  before(async () => {
    hook = await startConnectHook();
    server = await startTarget([
      '--namespace', '/',
      '--namespace', '/admin',
      '--connect-hook-url', hook.url,
      '--connect-hook-timeout-ms', String(HOOK_TIMEOUT_MS),
      '--api-key', API_KEY,
    ]);
    api = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
    pool = new SocketPool(server.httpUrls);
  });

  afterEach(() => {
    pool.closeAll();
    hook.authorize = allowAll;
  });

  after(async () => {
    pool?.closeAll();
    api?.close();
    await server?.stop();
    hook?.stop();
  });

  it('an allowed socket gets the user, rooms (before "connect") and data the hook answered', async () => {
    hook.authorize = async (req) =>
      req.auth_json && JSON.parse(req.auth_json).marker === 'allowed'
        ? { allow: true, user_id: 'hook-user', rooms: ['hook-room', 'vip'], data_json: '{"plan":"pro","seats":3}' }
        : { allow: false, message: 'unexpected request' };
    const consumer = await api.consume({ events: ['whoami'] }).ready();
    try {
      for (const [edge, transports] of [[0, ['websocket']], [1, ['polling']]]) {
        const client = pool.openAt(edge, '/', {
          transports,
          auth: { marker: 'allowed', session: 'opaque-session-token', tenant: 7 },
          query: { tenant: 'acme' },
          extraHeaders: { 'X-App-Version': '1.2.3', Cookie: 'sid=abc123', Authorization: 'Bearer opaque' },
        });
        // The rooms are joined before the client sees "connect": an emit sent
        // right after it reaches the socket through the room.
        const emitted = new Promise((resolve, reject) =>
          client.socket.once('connect', () =>
            api
              .emit({ to: { rooms: ['hook-room'] }, event: 'room-news', args_json: '["first"]' })
              .then(resolve, reject),
          ),
        );
        await waitConnected(client.socket);
        await emitted;
        assert.deepEqual(await client.nextEvent('room-news'), ['first']);

        const { sockets } = await api.fetchSockets({ target: { socket_ids: [client.id] } });
        assert.equal(sockets.length, 1);
        const [s] = sockets;
        assert.equal(s.user_id, 'hook-user');
        assert.deepEqual(sorted(s.rooms), sorted([client.id, 'hook-room', 'vip']));
        assert.deepEqual(JSON.parse(s.data_json), { plan: 'pro', seats: 3 });
        assert.equal(s.headers['x-app-version'], '1.2.3');
        assert.equal(s.headers.cookie, undefined, 'FetchSockets hides cookies');
        assert.equal(s.headers.authorization, undefined, 'FetchSockets hides the authorization header');

        client.socket.emit('whoami');
        const event = await consumer.next((e) => e.socket_id === client.id);
        assert.equal(event.user_id, 'hook-user');

        // What the hook was asked.
        const [req] = requestsMarked('allowed').slice(-1);
        assert.equal(req.namespace, '/');
        assert.deepEqual(JSON.parse(req.auth_json), { marker: 'allowed', session: 'opaque-session-token', tenant: 7 });
        assert.deepEqual(req.query, { tenant: 'acme' }, "Engine.IO's own parameters are left out");
        assert.equal(req.headers['x-app-version'], '1.2.3');
        assert.equal(req.headers.cookie, 'sid=abc123', 'the hook sees cookies');
        assert.equal(req.headers.authorization, 'Bearer opaque', 'the hook sees the authorization header');
        assert.match(req.remote_addr, /^127\.0\.0\.1:\d+$/);
        assert.notEqual(req.node_id, '');
        if (nodeOf(client)) assert.equal(req.node_id, nodeOf(client));
        client.socket.close();
      }
      assert.equal(requestsMarked('allowed').length, 2, 'one hook call per CONNECT');
    } finally {
      consumer.close();
    }
  });

  it('an allowed socket without a user id is anonymous; a client without auth sends an empty auth_json', async () => {
    const before = hook.requests.length;
    hook.authorize = async () => ({ allow: true });
    const client = await pool.connectAt(2, '/', { query: { who: 'anon' } });
    const req = hook.requests.slice(before).find((r) => r.query.who === 'anon');
    assert.ok(req, 'the hook was asked');
    assert.equal(req.auth_json, '');
    const { sockets } = await api.fetchSockets({ target: { socket_ids: [client.id] } });
    assert.equal(sockets[0].user_id, '');
    assert.deepEqual(sockets[0].rooms, [client.id]);
    assert.equal(sockets[0].data_json, '');
  });

  it('is asked for every namespace of a connection, and may allow one and refuse another', async () => {
    hook.authorize = async (req) =>
      req.namespace === '/admin'
        ? { allow: false, message: 'admins only' }
        : { allow: true, user_id: JSON.parse(req.auth_json).user };
    const mux = pool.manager({}, 1);
    const root = await mux.connect('/', { auth: { marker: 'mux', user: 'mux-user' } });
    const admin = mux.manager.socket('/admin', { auth: { marker: 'mux', user: 'mux-user' } });
    const err = await new Promise((resolve) => admin.once('connect_error', resolve));
    admin.close();
    assert.equal(err.message, 'admins only');
    assert.deepEqual(
      requestsMarked('mux').map((r) => r.namespace),
      ['/', '/admin'],
    );
    assert.equal(root.socket.connected, true, 'the refusal of /admin leaves / connected');
    const { sockets } = await api.fetchSockets({ target: { user_ids: ['mux-user'] } });
    assert.deepEqual(sockets.map((s) => s.id), [root.id]);
  });

  it('a refusal shows the hook\'s message, or "not authorized" without one', async () => {
    hook.authorize = async (req) => ({ allow: false, message: JSON.parse(req.auth_json).message });
    const withMessage = await pool.connectError('/', { auth: { message: 'banned until tomorrow' } });
    assert.equal(withMessage.message, 'banned until tomorrow');
    const without = await pool.connectError('/', { auth: { message: '' } });
    assert.equal(without.message, 'not authorized');
  });

  it('a hook that answers with an error refuses with "connect hook unavailable"', async () => {
    for (const code of [GrpcStatus.INTERNAL, GrpcStatus.UNAVAILABLE, GrpcStatus.PERMISSION_DENIED]) {
      hook.authorize = async () => {
        throw grpcError(code, 'database down');
      };
      const err = await pool.connectError('/', { auth: { marker: 'error' } });
      assert.equal(err.message, 'connect hook unavailable', `for gRPC status ${code}`);
    }
  });

  it('a hook that answers too late refuses with "connect hook timed out"', async () => {
    hook.authorize = async (_req, call) => {
      await delayAnswer(call, HOOK_TIMEOUT_MS * 4);
      return { allow: true, user_id: 'too-late' };
    };
    const started = Date.now();
    const err = await pool.connectError('/', { auth: { marker: 'slow' } });
    const elapsed = Date.now() - started;
    assert.equal(err.message, 'connect hook timed out');
    assert.ok(elapsed >= HOOK_TIMEOUT_MS - 100, `refused after ${elapsed} ms, before the hook's time was up`);
    assert.ok(elapsed < HOOK_TIMEOUT_MS * 4, `refused after ${elapsed} ms, not at the ${HOOK_TIMEOUT_MS} ms timeout`);
    const { sockets } = await api.fetchSockets({ target: { user_ids: ['too-late'] } });
    assert.deepEqual(sockets, [], 'the late answer does not let the socket in');
  });

  const invalid = [
    ['an empty room', { rooms: ['ok', ''] }, 'rooms'],
    ['a room over 256 bytes', { rooms: ['r'.repeat(257)] }, 'rooms'],
    ['data_json that is not JSON', { data_json: '{plan: pro}' }, 'data_json'],
    ['data_json over 16 KiB', { data_json: JSON.stringify('d'.repeat(16 * 1024 - 1)) }, 'data_json'],
    ['a user id over 256 bytes', { user_id: 'u'.repeat(257) }, 'user_id'],
  ];
  for (const [what, answer, field] of invalid) {
    it(`an answer with ${what} refuses with "connect hook answered with invalid ${field}"`, async () => {
      hook.authorize = async () => ({ allow: true, user_id: 'invalid-answer', ...answer });
      const err = await pool.connectError('/', { auth: { marker: 'invalid' } });
      assert.equal(err.message, `connect hook answered with invalid ${field}`);
      const { sockets } = await api.fetchSockets({ target: { user_ids: ['invalid-answer'] } });
      assert.deepEqual(sockets, []);
    });
  }

  it('data_json of exactly 16 KiB and rooms of 256 bytes are accepted', async () => {
    const data = JSON.stringify('d'.repeat(16 * 1024 - 2));
    assert.equal(Buffer.byteLength(data), 16 * 1024);
    const room = 'r'.repeat(256);
    hook.authorize = async () => ({ allow: true, user_id: 'limits', rooms: [room], data_json: data });
    const client = await pool.connect('/', { auth: { marker: 'limits' } });
    const { sockets } = await api.fetchSockets({ target: { rooms: [room] } });
    assert.deepEqual(sockets.map((s) => s.id), [client.id]);
    assert.equal(sockets[0].data_json, data);
  });

  it('cannot be combined with --jwt-secret or --allow-anonymous: the process does not start', async () => {
    const role =
      server.kind === 'cluster'
        ? ['edge', '--nats-url', 'nats://127.0.0.1:1']
        : ['standalone', '--grpc-listen', '127.0.0.1:0'];
    const listen = ['--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'];
    for (const conflicting of [['--jwt-secret', 'a-secret-of-more-than-16-bytes'], ['--allow-anonymous']]) {
      const res = await runCli([...role, ...listen, '--connect-hook-url', hook.url, ...conflicting], {
        json: false,
        timeoutMs: 10_000,
      });
      assert.notEqual(res.code, 0, `${conflicting[0]}: exit code`);
      assert.doesNotMatch(res.stdout, /roomcast listening/);
      assert.match(res.stderr, /connect.hook/i, `${conflicting[0]}: stderr names the conflict:\n${res.stderr}`);
    }
  });

  // Last: it takes the hook server down.
  it('while the hook server is down CONNECTs are refused as "connect hook unavailable"; then it recovers', async () => {
    hook.stop();
    for (const edge of [0, 1, 2]) {
      const client = pool.openAt(edge, '/', { auth: { marker: 'down' } });
      const err = await new Promise((resolve, reject) => {
        client.socket.once('connect_error', resolve);
        client.socket.once('connect', () => reject(new Error('connected while the hook is down')));
      });
      client.socket.close();
      assert.equal(err.message, 'connect hook unavailable');
    }

    await hook.start();
    hook.authorize = async () => ({ allow: true, user_id: 'back' });
    await waitFor(
      async () => {
        try {
          await pool.connect('/', { auth: { marker: 'back' } });
          return true;
        } catch (err) {
          if (!/connect hook unavailable/.test(err.message)) throw err;
          return false;
        }
      },
      15_000,
      'a CONNECT to succeed once the hook is back',
      200,
    );
  });
});
