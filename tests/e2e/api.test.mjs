// The gRPC control API as a backend uses it: every selector (rooms, socket ids,
// user ids, exceptions), EmitWithAck, JoinRooms/LeaveRooms, DisconnectSockets,
// FetchSockets, ListRooms, ConsumeEvents groups, and the errors each call
// answers with. Runs against one `roomcast standalone` process, or, with
// ROOMCAST_E2E_TARGET=cluster, against three edges and a control plane over NATS
// with the sockets spread over the edges. Every test starts with no socket
// connected, so whole-namespace selectors and room counts see only its own.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  bytesOf,
  claims,
  createRoomcastClient,
  fetchMetrics,
  GrpcStatus,
  placeholder,
  RawSocket,
  settle,
  signHs256,
  SocketPool,
  startTarget,
  targetKind,
  useApiTarget,
  waitFor,
  withTimeout,
} from './lib/index.mjs';

const SECRET = 'e2e-api-hs256-secret-with-enough-bytes-0123';
const API_KEY = 'e2e-api-key';
const TARGET = targetKind();
const NAMESPACES = ['/', '/admin'];

const args = (...values) => JSON.stringify(values);
const sorted = (list) => [...list].sort();
const ids = (clients) => sorted(clients.map((c) => c.id));

/** Answers every `event` the client receives with `answer(...args)` as the ack's arguments. */
function ackWith(client, event, answer) {
  client.socket.on(event, (...received) => {
    const callback = received.pop();
    if (typeof callback === 'function') callback(...[answer(...received)].flat());
  });
}

/** Every disconnect reason the socket reports, in order. */
function recordDisconnects(client) {
  const reasons = [];
  client.socket.on('disconnect', (reason) => reasons.push(reason));
  return reasons;
}

describe(`control API against roomcast ${TARGET}`, { timeout: 240_000 }, () => {
  let server;
  let api;
  let pool;

  const token = (sub, rooms) => signHs256(claims(sub, rooms ? { rooms } : {}), SECRET);
  const asUser = (sub, rooms, opts = {}) => ({ auth: { token: token(sub, rooms) }, ...opts });
  /** A socket of user `sub` on the `edge`-th client URL (every URL is the same one in standalone). */
  const connectAt = (edge, sub, rooms, opts, namespace = '/') =>
    pool.connectAt(edge, namespace, asUser(sub, rooms, opts));
  /** The node id FetchSockets and EmitWithAck must report for a client, when the target tells. */
  const nodeOf = (client) =>
    server.kind === 'cluster' ? server.edges.find((e) => e.httpUrl === client.httpUrl || e.balancedUrl === client.httpUrl).nodeId : undefined;

  async function socketIds(target) {
    const { sockets } = await api.fetchSockets({ target });
    return sorted(sockets.map((s) => s.id));
  }

  useApiTarget({ namespaces: NAMESPACES, secret: SECRET, apiKey: API_KEY }, (t) => {
    ({ server, api, pool } = t);
  });

  describe('EmitStream', () => {
    it('emits every message in order, each to its own selector, and counts them', async () => {
      const inRoom = await connectAt(0, 'stream-alice', ['stream-room']);
      const user = await connectAt(1, 'stream-bob');
      const requests = [];
      for (let i = 0; i < 60; i++) {
        const to = i % 2 ? { user_ids: ['stream-bob'] } : { rooms: ['stream-room'] };
        requests.push({ to, event: 'seq', args_json: args(i) });
      }
      const { emitted } = await api.emitStream(requests);
      assert.equal(emitted, '60');
      await waitFor(() => inRoom.count('seq') === 30 && user.count('seq') === 30, 5000, 'every event');
      const evens = [...Array(30).keys()].map((k) => [2 * k]);
      assert.deepEqual(inRoom.argsOf('seq'), evens, 'the room got its events once, in order');
      assert.deepEqual(user.argsOf('seq'), evens.map(([n]) => [n + 1]), 'so did the user');
    });

    it('a message Emit would refuse ends the call with its index: those before it were emitted, none after', async () => {
      const client = await connectAt(2, 'stream-carol', ['stream-refused']);
      const to = { rooms: ['stream-refused'] };
      const requests = [0, 1, 2].map((i) => ({ to, event: 'part', args_json: args(i) }));
      requests.push({ to, event: 'connect', args_json: args(3) }, { to, event: 'part', args_json: args(4) });
      const err = await api.emitStream(requests).then(
        () => assert.fail('the call succeeded'),
        (e) => e,
      );
      assert.equal(err.code, GrpcStatus.INVALID_ARGUMENT);
      assert.match(err.details, /^message 3: /);
      assert.deepEqual(err.metadata.get('roomcast-emitted'), ['3']);
      await settle(api, [client], { rooms: ['stream-refused'] });
      assert.deepEqual(client.argsOf('part'), [[0], [1], [2]]);

      const acked = { to: { user_ids: ['stream-carol'] }, event: 'part', at_least_once: true, ttl_ms: 1000 };
      const refused = await api.emitStream([acked]).then(
        () => assert.fail('an at-least-once emit was accepted on a stream'),
        (e) => e,
      );
      assert.equal(refused.code, GrpcStatus.INVALID_ARGUMENT);
      assert.match(refused.details, /^message 0: at_least_once emits go through Emit/);
    });
  });

  describe('selectors', () => {
    it('user_ids reach every socket of those users on any edge, in that namespace only, without a room', async () => {
      const alice1 = await connectAt(0, 'alice');
      const alice2 = await connectAt(1, 'alice');
      const aliceAdmin = await connectAt(2, 'alice', undefined, {}, '/admin');
      const bob = await connectAt(2, 'bob');

      await api.emit({ to: { user_ids: ['alice'] }, event: 'for-alice', args_json: args('hi', 1) });
      await settle(api, [alice1, alice2, aliceAdmin, bob], { users: ['alice'] });

      assert.deepEqual(alice1.argsOf('for-alice'), [['hi', 1]]);
      assert.deepEqual(alice2.argsOf('for-alice'), [['hi', 1]]);
      assert.equal(aliceAdmin.count('for-alice'), 0, 'a user selector of "/" does not reach "/admin"');
      assert.equal(bob.count('for-alice'), 0);

      const toAdmin = { namespace: '/admin', user_ids: ['alice'] };
      await api.emit({ to: toAdmin, event: 'for-alice', args_json: args('admin') });
      await settle(api, [alice1, alice2, aliceAdmin, bob], { users: ['alice'] });
      assert.deepEqual(aliceAdmin.argsOf('for-alice'), [['admin']]);
      assert.equal(alice1.count('for-alice'), 1);
    });

    it('an emit to a user sent right after their connect completed reaches the new socket, once', async () => {
      // The control plane finds users' sockets in presence; a connect is
      // recorded there before the client hears it is connected, so an emit
      // sent after that must find the socket, on whichever edge it is.
      const controlAdmin = server.kind === 'cluster' ? server.controls[0].adminUrl : server.adminUrl;
      const lookups = async () => {
        const metrics = await fetchMetrics(controlAdmin);
        return ['directory', 'store'].map((source) => metrics.get(`roomcast_control_user_lookups_total{source="${source}"}`) ?? 0);
      };
      const [directoryBefore] = await lookups();
      const sockets = [];
      for (let i = 0; i < 12; i++) {
        const user = `fresh-${i}`;
        const first = await connectAt(i % 3, user);
        await api.emit({ to: { user_ids: [user] }, event: 'welcome', args_json: args(i, 'first') });
        // A second socket of the same user, on another edge: its user's
        // state changes rather than appears.
        const second = await connectAt((i + 1) % 3, user);
        await api.emit({ to: { user_ids: [user] }, event: 'welcome', args_json: args(i, 'both') });
        sockets.push([user, i, first, second]);
      }
      const clients = sockets.flatMap(([, , first, second]) => [first, second]);
      await settle(api, clients, { users: sockets.map(([user]) => user) });
      for (const [user, i, first, second] of sockets) {
        assert.deepEqual(first.argsOf('welcome'), [[i, 'first'], [i, 'both']], `${user}'s first socket`);
        assert.deepEqual(second.argsOf('welcome'), [[i, 'both']], `${user}'s second socket`);
      }
      // Found in the control plane's watched user directory, not by a read
      // per user (which remains the fallback).
      const [directoryAfter, store] = await lookups();
      assert.ok(directoryAfter > directoryBefore, `no lookup answered by the directory (${store} by the store)`);
    });

    it('rooms, socket_ids and user_ids are a union in which each socket gets the emit once', async () => {
      const alice = await connectAt(0, 'alice', ['union-room']);
      const bob = await connectAt(1, 'bob', ['union-room']);
      const carol = await connectAt(2, 'carol');
      const dave = await connectAt(0, 'dave');

      await api.emit({
        to: { rooms: ['union-room'], socket_ids: [alice.id, carol.id], user_ids: ['alice', 'carol'] },
        event: 'union',
        args_json: args('once'),
      });
      await settle(api, [alice, bob, carol, dave], { rooms: ['union-room'], users: ['alice', 'carol'] });

      assert.deepEqual(alice.argsOf('union'), [['once']]);
      assert.deepEqual(bob.argsOf('union'), [['once']]);
      assert.deepEqual(carol.argsOf('union'), [['once']]);
      assert.equal(dave.count('union'), 0);
    });

    it('10,000 rooms (the limit), users and ids in one emit: each socket gets it once, whatever names it how often', async () => {
      const rooms = Array.from({ length: 9_999 }, (_, i) => `many-${i}`);
      const wide = await connectAt(0, 'erin', ['many-0', 'many-5000', 'many-9998']);
      const erinElsewhere = await connectAt(1, 'erin');
      const narrow = await connectAt(1, 'frank', ['many-42', 'not-many']);
      const named = await connectAt(2, 'gina', ['many-7']);
      const excepted = await connectAt(2, 'hank', ['many-8', 'many-quiet']);
      const outside = await connectAt(0, 'ivan', ['not-many']);

      await api.emit({
        to: { rooms: [...rooms, 'many-quiet'], user_ids: ['erin', 'erin'], socket_ids: [named.id, wide.id], except_rooms: ['many-quiet'] },
        event: 'many',
        args_json: args(1),
      });
      await api.emit({ to: { rooms: ['many-9998', 'many-0', 'many-42'] }, event: 'many', args_json: args(2) });
      const everyone = [wide, erinElsewhere, narrow, named, excepted, outside];
      await settle(api, everyone, {
        rooms: ['many-0', 'many-5000', 'many-9998', 'many-42', 'many-7', 'many-8', 'not-many'],
        users: ['erin'],
      });

      assert.deepEqual(wide.argsOf('many'), [[1], [2]]);
      assert.deepEqual(erinElsewhere.argsOf('many'), [[1]]);
      assert.deepEqual(narrow.argsOf('many'), [[1], [2]]);
      assert.deepEqual(named.argsOf('many'), [[1]]);
      assert.equal(excepted.count('many'), 0);
      assert.equal(outside.count('many'), 0);
    });

    it('except_rooms and except_socket_ids remove sockets a user selector picked', async () => {
      const muted = await connectAt(0, 'alice', ['muted']);
      const loud = await connectAt(1, 'alice');
      const quiet = await connectAt(2, 'alice');
      const everyone = [muted, loud, quiet];

      await api.emit({ to: { user_ids: ['alice'], except_rooms: ['muted'] }, event: 'x-room', args_json: args(1) });
      await settle(api, everyone, { rooms: ['muted'], users: ['alice'] });
      const notQuiet = { user_ids: ['alice'], except_socket_ids: [quiet.id] };
      await api.emit({ to: notQuiet, event: 'x-sock', args_json: args(2) });
      await settle(api, everyone, { users: ['alice'] });

      assert.equal(muted.count('x-room'), 0);
      assert.deepEqual(loud.argsOf('x-room'), [[1]]);
      assert.deepEqual(quiet.argsOf('x-room'), [[1]]);
      assert.deepEqual(muted.argsOf('x-sock'), [[2]]);
      assert.deepEqual(loud.argsOf('x-sock'), [[2]]);
      assert.equal(quiet.count('x-sock'), 0);
    });

    it('an empty selector is the whole namespace, less both kinds of exception', async () => {
      const inRoom = await connectAt(0, 'u1', ['left-out']);
      const excepted = await connectAt(1, 'u2');
      const reached = await connectAt(2, 'u3');
      const admin = await connectAt(0, 'u4', undefined, {}, '/admin');

      await api.emit({
        to: { except_rooms: ['left-out'], except_socket_ids: [excepted.id] },
        event: 'broadcast',
        args_json: args('all but two'),
      });
      await settle(api, [inRoom, excepted, reached, admin], { rooms: ['left-out'] });

      assert.deepEqual(reached.argsOf('broadcast'), [['all but two']]);
      assert.equal(inRoom.count('broadcast'), 0);
      assert.equal(excepted.count('broadcast'), 0);
      assert.equal(admin.count('broadcast'), 0);
    });
  });

  describe('EmitWithAck', () => {
    it("collects each socket's ack (binary too) and reports a silent socket as not acked at the timeout", async () => {
      const text = await connectAt(0, 'acker-text', ['ack-room']);
      const binary = await connectAt(1, 'acker-binary', ['ack-room']);
      const silent = await connectAt(2, 'acker-silent', ['ack-room']);
      const outsider = await connectAt(0, 'outsider');
      const reply = Buffer.from([0, 1, 2, 250, 255]);
      ackWith(text, 'question', (q) => ['yes', { q }]);
      ackWith(binary, 'question', () => [{ data: reply }]);
      ackWith(outsider, 'question', () => ['not asked']);
      // `silent` receives the event but has no callback to answer with.

      const attachment = Buffer.from('question bytes');
      const started = Date.now();
      const res = await api.emitWithAck({
        to: { rooms: ['ack-room'] },
        event: 'question',
        args_json: args('q1', placeholder(0)),
        attachments: [attachment],
        timeout_ms: 1500,
      });
      const elapsed = Date.now() - started;

      assert.equal(res.complete, true);
      assert.ok(elapsed >= 1400, `returned after ${elapsed} ms, before the 1500 ms timeout`);
      assert.ok(elapsed < 4500, `returned after ${elapsed} ms, long after the 1500 ms timeout`);
      assert.deepEqual(sorted(res.results.map((r) => r.socket_id)), ids([text, binary, silent]));
      const result = (client) => res.results.find((r) => r.socket_id === client.id);

      assert.equal(result(text).acked, true);
      assert.deepEqual(JSON.parse(result(text).args_json), ['yes', { q: 'q1' }]);
      assert.deepEqual(result(text).attachments, []);
      assert.equal(result(binary).acked, true);
      assert.deepEqual(JSON.parse(result(binary).args_json), [{ data: placeholder(0) }]);
      assert.deepEqual(result(binary).attachments, [reply]);
      assert.equal(result(silent).acked, false);
      assert.equal(result(silent).args_json, '');
      assert.deepEqual(result(silent).attachments, []);
      for (const client of [text, binary, silent]) {
        const node = result(client).node_id;
        assert.notEqual(node, '', 'node_id is set');
        if (nodeOf(client)) assert.equal(node, nodeOf(client), `node of ${client.id}`);
      }

      // Every member got the question once, binary attachment included.
      const [[q, bytes]] = silent.argsOf('question');
      assert.equal(q, 'q1');
      assert.deepEqual(bytesOf(bytes), attachment);
      assert.equal(text.count('question'), 1);
      assert.equal(outsider.count('question'), 0);
    });

    it('returns as soon as every selected socket (here: every socket of a user) has acked', async () => {
      const sockets = [await connectAt(0, 'fast'), await connectAt(1, 'fast'), await connectAt(2, 'fast')];
      for (const [i, client] of sockets.entries()) ackWith(client, 'ping-all', () => [`pong-${i}`]);
      const other = await connectAt(0, 'slow');

      const started = Date.now();
      const res = await api.emitWithAck({ to: { user_ids: ['fast'] }, event: 'ping-all', timeout_ms: 20_000 });
      const elapsed = Date.now() - started;

      assert.ok(elapsed < 5000, `took ${elapsed} ms although every socket acked at once`);
      assert.equal(res.complete, true);
      assert.deepEqual(sorted(res.results.map((r) => r.socket_id)), ids(sockets));
      for (const [i, client] of sockets.entries()) {
        const r = res.results.find((x) => x.socket_id === client.id);
        assert.equal(r.acked, true);
        assert.deepEqual(JSON.parse(r.args_json), [`pong-${i}`]);
      }
      assert.equal(other.count('ping-all'), 0);
    });

    it('an ack with no arguments is acked with an empty array', async () => {
      const client = await connectAt(0, 'empty-acker');
      client.socket.on('nudge', (callback) => callback());
      const res = await api.emitWithAck({ to: { socket_ids: [client.id] }, event: 'nudge', timeout_ms: 5000 });
      assert.equal(res.results.length, 1);
      assert.equal(res.results[0].acked, true);
      assert.deepEqual(JSON.parse(res.results[0].args_json || '[]'), []);
    });

    it('with no socket selected, answers at once with no results', async () => {
      await connectAt(0, 'somebody');
      const started = Date.now();
      const res = await api.emitWithAck({ to: { user_ids: ['nobody-here'] }, event: 'void', timeout_ms: 20_000 });
      const elapsed = Date.now() - started;
      assert.deepEqual(res.results, []);
      assert.equal(res.complete, true);
      assert.ok(elapsed < 5000, `took ${elapsed} ms to select nothing`);
    });
  });

  describe('JoinRooms / LeaveRooms by selector', () => {
    it('join by user id, leave by room: emits and FetchSockets follow the membership', async () => {
      const alice1 = await connectAt(0, 'alice');
      const alice2 = await connectAt(1, 'alice');
      const bob = await connectAt(2, 'bob');
      const everyone = [alice1, alice2, bob];

      await api.joinRooms({ target: { user_ids: ['alice'] }, rooms: ['room-a', 'room-b'] });
      assert.deepEqual(await socketIds({ rooms: ['room-a'] }), ids([alice1, alice2]));
      assert.deepEqual(await socketIds({ rooms: ['room-b'] }), ids([alice1, alice2]));
      await api.emit({ to: { rooms: ['room-a'] }, event: 'in-a', args_json: args(1) });
      await settle(api, everyone, { rooms: ['room-a'] });
      assert.deepEqual(alice1.argsOf('in-a'), [[1]]);
      assert.deepEqual(alice2.argsOf('in-a'), [[1]]);
      assert.equal(bob.count('in-a'), 0);

      // Every member of room-a leaves room-a; room-b is untouched.
      await api.leaveRooms({ target: { rooms: ['room-a'] }, rooms: ['room-a'] });
      assert.deepEqual(await socketIds({ rooms: ['room-a'] }), []);
      assert.deepEqual(await socketIds({ rooms: ['room-b'] }), ids([alice1, alice2]));
      await api.emit({ to: { rooms: ['room-a'] }, event: 'in-a', args_json: args(2) });
      await api.emit({ to: { rooms: ['room-b'] }, event: 'in-b', args_json: args(3) });
      await settle(api, everyone, { rooms: ['room-a', 'room-b'] });
      assert.deepEqual(alice1.argsOf('in-a'), [[1]]);
      assert.deepEqual(alice2.argsOf('in-b'), [[3]]);
      assert.equal(bob.count('in-b'), 0);
    });

    it('join the whole namespace less a room and a socket; leave by socket id', async () => {
      const inExcepted = await connectAt(0, 'u1', ['not-these']);
      const excepted = await connectAt(1, 'u2');
      const joined = await connectAt(2, 'u3');
      const alsoJoined = await connectAt(0, 'u4');
      const admin = await connectAt(1, 'u5', undefined, {}, '/admin');

      await api.joinRooms({
        target: { except_rooms: ['not-these'], except_socket_ids: [excepted.id] },
        rooms: ['most'],
      });
      assert.deepEqual(await socketIds({ rooms: ['most'] }), ids([joined, alsoJoined]));
      assert.deepEqual(await socketIds({ namespace: '/admin', rooms: ['most'] }), []);

      await api.leaveRooms({ target: { socket_ids: [joined.id] }, rooms: ['most'] });
      assert.deepEqual(await socketIds({ rooms: ['most'] }), ids([alsoJoined]));
      await api.emit({ to: { rooms: ['most'] }, event: 'most', args_json: args('x') });
      await settle(api, [inExcepted, excepted, joined, alsoJoined, admin], { rooms: ['most'] });
      assert.deepEqual(alsoJoined.argsOf('most'), [['x']]);
      for (const c of [inExcepted, excepted, joined, admin]) assert.equal(c.count('most'), 0);
    });
  });

  describe('DisconnectSockets', () => {
    it('close: false disconnects the namespace only, with "io server disconnect"', async () => {
      const mux = pool.manager({}, 0);
      const root = await mux.connect('/', { auth: { token: token('mux-user') } });
      const admin = await mux.connect('/admin', { auth: { token: token('mux-user') } });
      const bystander = await connectAt(1, 'bystander');
      const rootReasons = recordDisconnects(root);
      const adminReasons = recordDisconnects(admin);
      const bystanderReasons = recordDisconnects(bystander);

      const res = await api.disconnectSockets({ target: { socket_ids: [root.id] }, close: false });
      assert.equal(res.disconnected, 1);
      await waitFor(() => rootReasons.length > 0, 5000, 'the "/" socket to be disconnected');
      assert.deepEqual(rootReasons, ['io server disconnect']);

      // The connection and its other namespace live on.
      await api.emit({ to: { namespace: '/admin', socket_ids: [admin.id] }, event: 'still-here', args_json: args(1) });
      assert.deepEqual(await admin.nextEvent('still-here'), [1]);
      assert.equal(admin.socket.connected, true);
      assert.equal(mux.manager.engine.readyState, 'open');
      assert.deepEqual(adminReasons, []);
      assert.deepEqual(bystanderReasons, []);
      assert.deepEqual(await socketIds({}), ids([bystander]));
    });

    it('close: true closes the whole connection, every namespace on it', async () => {
      const mux = pool.manager({}, 1);
      const root = await mux.connect('/', { auth: { token: token('closer') } });
      const admin = await mux.connect('/admin', { auth: { token: token('closer') } });
      const bystander = await connectAt(2, 'bystander');
      const managerClosed = [];
      mux.manager.on('close', (reason) => managerClosed.push(reason));
      const rootReasons = recordDisconnects(root);
      const adminReasons = recordDisconnects(admin);

      const res = await api.disconnectSockets({ target: { socket_ids: [root.id] }, close: true });
      assert.equal(res.disconnected, 1);
      await waitFor(
        () => rootReasons.length && adminReasons.length && managerClosed.length,
        5000,
        'both namespaces to disconnect and the Engine.IO connection to close',
      );
      assert.equal(mux.manager.engine.readyState, 'closed');
      assert.equal(bystander.socket.connected, true);
      assert.deepEqual(await socketIds({ namespace: '/admin' }), []);
      assert.deepEqual(await socketIds({}), ids([bystander]));
    });

    it('close: true closes a raw WebSocket with 1000, reason forced_close', async () => {
      const raw = await RawSocket.connect(pool.urlAt(0));
      try {
        const sid = await raw.connectNamespace('/', { token: token('raw-closer') });
        const res = await api.disconnectSockets({ target: { socket_ids: [sid] }, close: true });
        assert.equal(res.disconnected, 1);
        await raw.nextFrame((f) => f === '41');
        assert.deepEqual(await raw.waitClosed(), { code: 1000, reason: 'forced_close' });
      } finally {
        raw.terminate();
      }
    });

    it('by user id: every socket of the user on every edge, counted, others untouched', async () => {
      const alice1 = await connectAt(0, 'alice');
      const alice2 = await connectAt(1, 'alice');
      const aliceAdmin = await connectAt(2, 'alice', undefined, {}, '/admin');
      const bob = await connectAt(2, 'bob');
      const reasons = [alice1, alice2, aliceAdmin, bob].map(recordDisconnects);

      const res = await api.disconnectSockets({ target: { user_ids: ['alice'] } });
      assert.equal(res.disconnected, 2);
      await waitFor(() => reasons[0].length && reasons[1].length, 5000, "alice's sockets to be disconnected");
      assert.deepEqual(reasons[0], ['io server disconnect']);
      assert.deepEqual(reasons[1], ['io server disconnect']);
      assert.deepEqual(await socketIds({ user_ids: ['alice'] }), []);
      assert.deepEqual(await socketIds({ namespace: '/admin', user_ids: ['alice'] }), [aliceAdmin.id]);
      assert.deepEqual(reasons[2], []);
      assert.deepEqual(reasons[3], []);
      assert.equal(bob.socket.connected, true);
    });
  });

  describe('FetchSockets', () => {
    for (const transports of [['websocket'], ['polling']]) {
      it(`describes a socket: user, node, rooms, handshake query and headers (transports: ${transports})`, async () => {
        const before = Date.now();
        const client = await pool.connectAt(2, '/', {
          transports,
          query: { lang: 'fr', ref: 'a b&c' },
          extraHeaders: {
            Authorization: `Bearer ${token('described', ['described-room'])}`,
            Cookie: 'session=secret-cookie',
            'X-Trace-Id': 'trace-123',
          },
        });
        const afterConnect = Date.now();

        const { sockets } = await api.fetchSockets({ target: { socket_ids: [client.id] } });
        assert.equal(sockets.length, 1);
        const [s] = sockets;
        assert.equal(s.id, client.id);
        assert.equal(s.user_id, 'described');
        assert.equal(s.namespace, '/');
        assert.notEqual(s.node_id, '');
        if (nodeOf(client)) assert.equal(s.node_id, nodeOf(client));
        assert.deepEqual(sorted(s.rooms), sorted([client.id, 'described-room']));
        const at = Number(s.connected_at_ms);
        assert.ok(
          at >= before - 1000 && at <= afterConnect + 1000,
          `connected_at_ms ${at} not in [${before}, ${afterConnect}]`,
        );
        assert.match(s.remote_addr, /^127\.0\.0\.1:\d+$/);
        assert.equal(s.transport, transports[0]);
        assert.deepEqual(s.query, { lang: 'fr', ref: 'a b&c' });
        assert.equal(s.headers['x-trace-id'], 'trace-123');
        assert.equal(s.headers.authorization, undefined, 'the authorization header is not handed out');
        assert.equal(s.headers.cookie, undefined, 'cookies are not handed out');
        assert.equal(s.data_json, '');
      });
    }

    it('reports the transport in use after an upgrade to WebSocket', async () => {
      const client = pool.openAt(0, '/', asUser('upgrader', undefined, { transports: ['polling', 'websocket'] }));
      const upgraded = new Promise((resolve) => client.socket.io.engine.once('upgrade', resolve));
      await waitFor(() => client.socket.connected, 5000, 'the client to connect');
      await withTimeout(upgraded, 5000, 'the upgrade to WebSocket');
      await waitFor(
        async () => {
          const { sockets } = await api.fetchSockets({ target: { socket_ids: [client.id] } });
          return sockets[0]?.transport === 'websocket';
        },
        5000,
        'FetchSockets to report transport "websocket"',
        50,
      );
    });

    it('selects by user, namespace and exceptions', async () => {
      const alice = await connectAt(0, 'alice', ['team']);
      const aliceAdmin = await connectAt(1, 'alice', undefined, {}, '/admin');
      const bob = await connectAt(2, 'bob', ['team']);
      const carol = await connectAt(0, 'carol');

      const { sockets: admins } = await api.fetchSockets({ target: { namespace: '/admin', user_ids: ['alice'] } });
      assert.deepEqual(admins.map((s) => [s.id, s.namespace, s.user_id]), [[aliceAdmin.id, '/admin', 'alice']]);
      assert.deepEqual(await socketIds({ user_ids: ['alice', 'bob'], except_socket_ids: [bob.id] }), [alice.id]);
      assert.deepEqual(await socketIds({ user_ids: ['carol'], rooms: ['team'] }), ids([alice, bob, carol]));
      assert.deepEqual(await socketIds({ except_rooms: ['team'] }), [carol.id]);
      assert.deepEqual(await socketIds({ user_ids: ['nobody'] }), []);
    });
  });

  describe('ListRooms', () => {
    it('counts members over every edge, sorted by name, own-id rooms left out, per namespace', async () => {
      await connectAt(0, 'u1', ['room-b', 'room-a']);
      await connectAt(1, 'u2', ['room-c', 'room-b']);
      await connectAt(2, 'u3', ['room-b']);
      await connectAt(0, 'u4');
      await connectAt(1, 'u5', ['room-a', 'room-z'], {}, '/admin');

      const expected = [
        { name: 'room-a', members: 1 },
        { name: 'room-b', members: 3 },
        { name: 'room-c', members: 1 },
      ];
      assert.deepEqual((await api.listRooms({ namespace: '/' })).rooms, expected);
      assert.deepEqual((await api.listRooms({})).rooms, expected, 'an empty namespace means "/"');
      assert.deepEqual((await api.listRooms({ namespace: '/admin' })).rooms, [
        { name: 'room-a', members: 1 },
        { name: 'room-z', members: 1 },
      ]);
    });

    it('follows joins, leaves and disconnects; an empty room is not listed', async () => {
      const first = await connectAt(0, 'u1');
      const second = await connectAt(1, 'u2');
      assert.deepEqual((await api.listRooms({})).rooms, []);

      await api.joinRooms({ target: {}, rooms: ['shared'] });
      assert.deepEqual((await api.listRooms({})).rooms, [{ name: 'shared', members: 2 }]);

      await api.leaveRooms({ target: { socket_ids: [first.id] }, rooms: ['shared'] });
      assert.deepEqual((await api.listRooms({})).rooms, [{ name: 'shared', members: 1 }]);

      second.socket.close();
      await waitFor(
        async () => (await api.listRooms({})).rooms.length === 0,
        5000,
        'the room to go once its last member disconnected',
        50,
      );
    });
  });

  describe('ConsumeEvents groups', () => {
    it('consumers of one group share the events, each once; a consumer without a group gets all', async () => {
      const grouped = [
        await api.consume({ events: ['work', 'work-end'], group: 'workers' }).ready(),
        await api.consume({ events: ['work', 'work-end'], group: 'workers' }).ready(),
      ];
      const everything = await api.consume({ events: ['work', 'work-end'] }).ready();
      const consumers = [...grouped, everything];
      try {
        const clients = [await connectAt(0, 'w0'), await connectAt(1, 'w1'), await connectAt(2, 'w2')];
        const total = 30;
        for (let i = 0; i < total; i++) clients[i % clients.length].socket.emit('work', i);
        for (const client of clients) client.socket.emit('work-end');

        const key = (e) => `${e.socket_id}/${e.args_json}`;
        const events = (c, name) => c.matching((e) => e.event === name);
        await waitFor(
          () => events(everything, 'work-end').length === clients.length,
          10_000,
          'the ungrouped consumer to receive every event',
        );
        // Each client's events are in order on its edge, and its "work-end" comes last.
        await waitFor(
          () => grouped.flatMap((c) => events(c, 'work-end')).length === clients.length,
          10_000,
          'the group to receive every client\'s "work-end"',
        );
        assert.deepEqual(sorted(events(everything, 'work').map((e) => JSON.parse(e.args_json)[0])), sorted(
          Array.from({ length: total }, (_, i) => i),
        ));
        const shared = grouped.flatMap((c) => events(c, 'work'));
        assert.equal(shared.length, total, 'every event reached the group exactly once');
        assert.equal(new Set(shared.map(key)).size, total);
      } finally {
        for (const c of consumers) c.close();
      }
    });
  });

  describe('errors', () => {
    const long = 'x'.repeat(257);
    const tooBig = JSON.stringify(['y'.repeat(1_000_001)]);
    const attachments = (n) => Array.from({ length: n }, (_, i) => Buffer.from([i]));
    const placeholders = (n) => JSON.stringify(Array.from({ length: n }, (_, i) => placeholder(i)));
    const cases = [
      ['an empty room name', () => api.emit({ to: { rooms: [''] }, event: 'e' }), /room/],
      ['a room name over 256 bytes', () => api.joinRooms({ target: {}, rooms: [long] }), /room/],
      ['an empty except room', () => api.emit({ to: { except_rooms: [''] }, event: 'e' }), /room/],
      ['an empty user id', () => api.emit({ to: { user_ids: [''] }, event: 'e' }), /user id/],
      ['an empty user id in FetchSockets', () => api.fetchSockets({ target: { user_ids: [''] } }), /user id/],
      ['an empty event name', () => api.emit({ to: {}, event: '' }), /event name/],
      ['a reserved event name', () => api.emit({ to: {}, event: 'disconnect' }), /reserved/],
      [
        'a reserved event name in EmitWithAck',
        () => api.emitWithAck({ to: {}, event: 'connect_error', timeout_ms: 100 }),
        /reserved/,
      ],
      [
        'args_json that is not a JSON array',
        () => api.emit({ to: {}, event: 'e', args_json: '{"a":1}' }),
        /json array/i,
      ],
      ['args_json that is not JSON', () => api.emit({ to: {}, event: 'e', args_json: '[1,' }), /json array/i],
      // Selectors are bounded (--max-selector-size, 10000 by default): a call's cost grows with them.
      [
        'a selector of 10,001 rooms',
        () => api.emit({ to: { rooms: Array.from({ length: 10_001 }, (_, i) => `r${i}`) }, event: 'e' }),
        /rooms has 10001 entries, more than the limit of 10000/,
      ],
      [
        'a selector of 10,001 user ids',
        () => api.fetchSockets({ target: { user_ids: Array.from({ length: 10_001 }, (_, i) => `u${i}`) } }),
        /user_ids has 10001 entries, more than the limit of 10000/,
      ],
      [
        'a JoinRooms of 10,001 rooms',
        () => api.joinRooms({ target: {}, rooms: Array.from({ length: 10_001 }, (_, i) => `r${i}`) }),
        /rooms to join or leave has 10001 entries/,
      ],
      // The bound a client's packets have too (100 levels, the array of arguments included).
      [
        'args_json nested 100,000 levels deep',
        () => api.emit({ to: {}, event: 'e', args_json: `[${'['.repeat(100_000)}${']'.repeat(100_000)}]` }),
        /nest deeper than 100 levels/,
      ],
      [
        'args_json nested 101 levels deep in EmitWithAck',
        () => api.emitWithAck({ to: {}, event: 'e', args_json: `${'['.repeat(101)}${']'.repeat(101)}`, timeout_ms: 100 }),
        /nest deeper than 100 levels/,
      ],
      [
        'a placeholder without its attachment',
        () =>
          api.emit({ to: {}, event: 'e', args_json: JSON.stringify([placeholder(1)]), attachments: attachments(1) }),
        /placeholder/,
      ],
      [
        'an attachment without its placeholder',
        () => api.emit({ to: {}, event: 'e', args_json: '[]', attachments: attachments(1) }),
        /placeholder|attachment/,
      ],
      [
        'more than 10 attachments',
        () => api.emit({ to: {}, event: 'e', args_json: placeholders(11), attachments: attachments(11) }),
        /11 attachments exceed the limit of 10/,
      ],
      ['a packet over max-payload', () => api.emit({ to: {}, event: 'e', args_json: tooBig }), /max payload/],
      [
        'an EmitWithAck timeout over 300000 ms',
        () => api.emitWithAck({ to: {}, event: 'e', timeout_ms: 300_001 }),
        /timeout_ms/,
      ],
      ['JoinRooms without rooms', () => api.joinRooms({ target: {}, rooms: [] }), /no rooms/],
      ['LeaveRooms without rooms', () => api.leaveRooms({ target: {}, rooms: [] }), /no rooms/],
      ['a namespace without a leading "/"', () => api.emit({ to: { namespace: 'admin' }, event: 'e' }), /namespace/],
      ['a bad namespace in ListRooms', () => api.listRooms({ namespace: 'admin' }), /namespace/],
      [
        'a bad namespace in DisconnectSockets',
        () => api.disconnectSockets({ target: { namespace: 'x' } }),
        /namespace/,
      ],
      [
        'a Reply whose reply_to is not an edge subject',
        () => api.reply({ reply_to: 'somewhere.else', socket_id: 'abc', namespace: '/', ack_id: 1, args_json: '[]' }),
        /reply_to/,
      ],
    ];
    for (const [what, call, message] of cases) {
      it(`INVALID_ARGUMENT for ${what}`, async () => {
        const err = await call().then(
          () => assert.fail('the call succeeded'),
          (e) => e,
        );
        assert.equal(err.code, GrpcStatus.INVALID_ARGUMENT, `code ${err.code}: ${err.details}`);
        assert.match(err.details, message);
      });
    }

    it('an invalid emit reaches nobody', async () => {
      const client = await connectAt(0, 'watcher', ['r']);
      await assert.rejects(api.emit({ to: { rooms: ['r', ''] }, event: 'bad' }), { code: GrpcStatus.INVALID_ARGUMENT });
      await assert.rejects(api.emit({ to: { rooms: ['r'] }, event: 'bad', args_json: '"x"' }), {
        code: GrpcStatus.INVALID_ARGUMENT,
      });
      await settle(api, [client], { rooms: ['r'] });
      assert.equal(client.count('bad'), 0);
    });

    it('UNAUTHENTICATED without the API key or with a wrong one, on every call', async () => {
      const anonymous = createRoomcastClient(server.grpcAddr);
      const wrong = createRoomcastClient(server.grpcAddr, { apiKey: 'not-the-key' });
      try {
        for (const [client, message] of [
          [anonymous, /missing api key/],
          [wrong, /invalid api key/],
        ]) {
          for (const call of [
            () => client.listRooms({}),
            () => client.fetchSockets({ target: {} }),
            () => client.emitWithAck({ to: {}, event: 'e', timeout_ms: 100 }),
            () => client.disconnectSockets({ target: {} }),
            () => client.leaveRooms({ target: {}, rooms: ['r'] }),
            () => client.reply({ reply_to: 'x', socket_id: 's', namespace: '/', ack_id: 1 }),
          ]) {
            const err = await call().then(() => assert.fail('the call succeeded'), (e) => e);
            assert.equal(err.code, GrpcStatus.UNAUTHENTICATED, `code ${err.code}: ${err.details}`);
            assert.match(err.details, message);
          }
        }
      } finally {
        anonymous.close();
        wrong.close();
      }
    });
  });
});

describe(`streams of roomcast ${TARGET}: live when they answer, UNAVAILABLE when roomcast stops`, { timeout: 120_000 }, () => {
  it('ConsumeEvents and WatchPresence say they are live in their headers, miss nothing after, and end with UNAVAILABLE at shutdown', async () => {
    const server = await startTarget(['--jwt-secret', SECRET, '--api-key', API_KEY]);
    const api = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
    const pool = new SocketPool(server.httpUrls);
    try {
      const client = await pool.connectAt(0, '/', { auth: { token: signHs256(claims('streamer'), SECRET) } });
      const consumer = api.consume({ events: ['first'] });
      const watch = api.watchPresence({ user_ids: ['streamer'] });
      const [consumerHeaders, watchHeaders] = await Promise.all([consumer.opened, watch.opened]);
      assert.deepEqual(consumerHeaders.get('roomcast-stream'), ['live']);
      assert.deepEqual(watchHeaders.get('roomcast-stream'), ['live']);

      // Sent the moment the headers arrived: not lost.
      client.socket.emit('first', 1);
      const event = await consumer.next((e) => e.event === 'first');
      assert.deepEqual(JSON.parse(event.args_json), [1]);
      await api.joinRooms({ target: { socket_ids: [client.id] }, rooms: ['seen'] });
      await watch.next((e) => e.kind === 'join');

      pool.closeAll();
      await server.stop();
      for (const stream of [consumer, watch]) {
        const err = await stream.failure(10_000);
        assert.equal(err.code, GrpcStatus.UNAVAILABLE, `${stream.rpc}: ${err.code} ${err.details}`);
      }
      assert.match((await consumer.failure()).details, /shutting down|bus connection/);
    } finally {
      pool.closeAll();
      api.close();
      await server.stop();
    }
  });

  it('WatchConnections: each connect with its handshake (secrets left out), each disconnect with its reason; a group shares them', async () => {
    const server = await startTarget(['--jwt-secret', SECRET, '--api-key', API_KEY]);
    const api = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
    const pool = new SocketPool(server.httpUrls);
    try {
      const all = await api.watchConnections({}).ready();
      const shared = [
        await api.watchConnections({ group: 'lifecycle' }).ready(),
        await api.watchConnections({ group: 'lifecycle' }).ready(),
      ];
      const token = signHs256(claims('lifer', { rooms: ['given'] }), SECRET);
      const client = await pool.connectAt(0, '/', {
        auth: { token, app: 'demo' },
        query: { build: '42' },
        extraHeaders: { 'x-client': 'e2e' },
      });
      const connect = await all.next((e) => e.kind === 'connect' && e.socket_id === client.id);
      assert.equal(connect.user_id, 'lifer');
      assert.equal(connect.namespace, '/');
      assert.ok(connect.node_id);
      assert.deepEqual(connect.rooms, ['given']);
      assert.deepEqual(JSON.parse(connect.auth_json), { app: 'demo' }, 'the token is left out');
      assert.equal(connect.query.build, '42');
      assert.equal(connect.headers['x-client'], 'e2e');
      assert.equal(connect.recovered, false);
      assert.ok(['polling', 'websocket'].includes(connect.transport));

      const byApi = await pool.connectAt(1, '/', { auth: { token: signHs256(claims('kicked'), SECRET) } });
      const byTransport = await pool.connectAt(2, '/', { auth: { token: signHs256(claims('dropped'), SECRET) } });
      // Ids taken now: a disconnected socket.io-client socket forgets its id.
      const [left, kicked, dropped] = [client.id, byApi.id, byTransport.id];
      client.socket.disconnect();
      await api.disconnectSockets({ target: { socket_ids: [kicked] } });
      byTransport.socket.io.engine.close();
      const reasonOf = async (id) =>
        (await all.next((e) => e.kind === 'disconnect' && e.socket_id === id, 5000, `a disconnect of ${id}`)).reason;
      assert.equal(await reasonOf(left), 'client namespace disconnect');
      assert.equal(await reasonOf(kicked), 'server namespace disconnect');
      assert.equal(await reasonOf(dropped), 'transport close');

      // The group saw each event once between its two streams.
      const inGroup = (kind, id) =>
        shared.flatMap((s) => s.matching((e) => e.kind === kind && e.socket_id === id)).length;
      await waitFor(() => inGroup('disconnect', dropped) === 1, 5000, 'the group to get the last disconnect');
      for (const id of [left, kicked, dropped]) {
        assert.equal(inGroup('connect', id), 1, `one connect of ${id} in the group`);
        assert.equal(inGroup('disconnect', id), 1, `one disconnect of ${id} in the group`);
      }
      for (const s of [all, ...shared]) s.close();
    } finally {
      pool.closeAll();
      api.close();
      await server.stop();
    }
  });
});
