// The SDK against a real roomcast (standalone, or a cluster with
// ROOMCAST_E2E_TARGET=cluster), with the official socket.io-client as the
// clients. Every wait polls with a deadline.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { AckTimeoutError, MISSED_DISCONNECT, Roomcast, RoomcastError, status } from '../src/index.js';
import { API_KEY, SECRET, SocketPool, asUser, startTarget, uid, waitFor, waitNoSockets, createRoomcastClient } from './kit.mjs';

const ARGS = ['--namespace', '/', '--namespace', '/admin', '--jwt-secret', SECRET, '--api-key', API_KEY, '--allow-anonymous', '--presence-grace-ms', '0'];

describe('@roomcast/server', () => {
  let server;
  let pool;
  let rc;
  let raw;
  const extra = [];

  before(async () => {
    server = await startTarget(ARGS);
    pool = new SocketPool(server.httpUrls);
    rc = new Roomcast({ address: server.grpcAddr, apiKey: API_KEY });
    raw = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
  });
  afterEach(async () => {
    pool.closeAll();
    for (const r of extra.splice(0)) r.close();
    await waitNoSockets(raw, ['/', '/admin']);
  });
  after(async () => {
    pool?.closeAll();
    rc?.close();
    raw?.close();
    await server?.stop();
  });

  /** A new Roomcast that closes after the test. */
  const fresh = (options = {}) => {
    const r = new Roomcast({ address: server.grpcAddr, apiKey: API_KEY, ...options });
    extra.push(r);
    return r;
  };

  it('emits to a room, except a room, and to a user', async () => {
    const [a, b, c] = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
    const alice = uid('alice');
    const d = await pool.connect('/', asUser(alice));
    await rc.in([a.id, b.id, c.id]).socketsJoin('lobby');
    await rc.in(b.id).socketsJoin('muted');
    await rc.to('lobby').except('muted').emit('news', { n: 1 }, 'two');
    await a.nextEvent('news', ([body, second]) => body.n === 1 && second === 'two');
    await c.nextEvent('news');
    await rc.toUser(alice).emit('dm', 'hi');
    await d.nextEvent('dm', ([text]) => text === 'hi');
    // Emits of one producer to one socket arrive in order: b saw no "news" before "after".
    await rc.to(b.id).emit('after');
    await b.nextEvent('after');
    assert.equal(b.count('news'), 0);
    assert.equal(d.count('news'), 0);
    assert.equal(a.count('dm'), 0);
  });

  it('fetchSockets describes sockets, whose methods act on them', async () => {
    const bob = uid('bob');
    const a = await pool.connect('/', asUser(bob, {}, { query: { app: 'web' } }));
    await rc.in(a.id).socketsJoin('room-f');
    const [s] = await rc.in('room-f').fetchSockets();
    assert.equal(s.id, a.id);
    assert.equal(s.userId, bob);
    assert.ok(s.rooms.has('room-f') && s.rooms.has(a.id));
    assert.equal(s.handshake.query.app, 'web');
    await s.join('room-g');
    await s.emit('hello', 1);
    await a.nextEvent('hello', ([n]) => n === 1);
    assert.equal((await rc.in('room-g').fetchSockets()).length, 1);
    await s.leave('room-g');
    assert.equal((await rc.in('room-g').fetchSockets()).length, 0);
    const gone = new Promise((resolve) => a.socket.once('disconnect', resolve));
    assert.equal(await s.disconnect(), 1);
    assert.equal(await gone, 'io server disconnect');
  });

  it('socketsJoin, socketsLeave and disconnectSockets act on a room', async () => {
    const [a, b] = await Promise.all([pool.connect(), pool.connect()]);
    await rc.in([a.id, b.id]).socketsJoin(['r1', 'r2']);
    assert.equal((await rc.in('r2').fetchSockets()).length, 2);
    await rc.in('r1').socketsLeave('r2');
    assert.equal((await rc.in('r2').fetchSockets()).length, 0);
    const rooms = await rc.rooms();
    assert.equal(rooms.get('r1'), 2);
    const closed = Promise.all([a, b].map((c) => new Promise((resolve) => c.socket.once('disconnect', resolve))));
    assert.equal(await rc.in('r1').disconnectSockets(true), 2);
    assert.deepEqual(await closed, ['io server disconnect', 'io server disconnect']);
  });

  it('emitWithAck collects the answers, and rejects with AckTimeoutError when one is missing', async () => {
    const [a, b] = await Promise.all([pool.connect(), pool.connect()]);
    a.socket.on('question', (q, ack) => ack({ from: 'a', q }));
    b.socket.on('question', (q, ack) => ack({ from: 'b', q }));
    await rc.in([a.id, b.id]).socketsJoin('quiz');
    const answers = await rc.timeout(2000).to('quiz').emitWithAck('question', 'x');
    assert.deepEqual(answers.map((r) => r.from).sort(), ['a', 'b']);
    const c = await pool.connect();
    c.socket.on('question', () => {}); // never acks
    await rc.in(c.id).socketsJoin('quiz');
    const err = await rc.timeout(300).to('quiz').emitWithAck('question', 'y').then(
      () => assert.fail('expected a timeout'),
      (e) => e,
    );
    assert.ok(err instanceof AckTimeoutError);
    assert.equal(err.responses.length, 2);
    assert.deepEqual(err.results.filter((r) => !r.acked).map((r) => r.socketId), [c.id]);
  });

  it('binary both ways: Buffers to clients, Buffers from clients and in acks', async () => {
    const r = fresh();
    const got = [];
    r.on('connection', (socket) => {
      socket.on('upload', (meta, data, ack) => {
        got.push({ meta, data });
        ack({ ok: true, echo: data });
      });
    });
    await r.ready();
    const a = await pool.connect();
    await rc.to(a.id).emit('file', { name: 'f', body: Buffer.from([1, 2, 3]) });
    const [file] = await a.nextEvent('file');
    assert.deepEqual([...file.body], [1, 2, 3]);
    const [reply] = await a.emitWithAckArgs('upload', { name: 'up' }, Buffer.from([9, 8]));
    assert.equal(reply.ok, true);
    assert.deepEqual([...reply.echo], [9, 8]);
    assert.ok(Buffer.isBuffer(got[0].data));
    a.socket.once('q', (ack) => ack(Buffer.from('pong')));
    const [answer] = await rc.timeout(2000).to(a.id).emitWithAck('q');
    assert.equal(Buffer.from(answer).toString(), 'pong');
  });

  it('on("connection") gives the handshake (auth without token), events with acks, and the disconnect reason', async () => {
    const r = fresh();
    const sockets = [];
    const reasons = new Map();
    r.on('connection', (socket) => {
      sockets.push(socket);
      socket.on('typing', (chat, ack) => {
        socket.to(chat).emit('typing', { from: socket.userId });
        ack?.('ok');
      });
      socket.on('join-chat', async (chat, ack) => {
        await socket.join(chat);
        ack({ rooms: [...socket.rooms] });
      });
      socket.on('disconnect', (reason) => reasons.set(socket.id, reason));
    });
    await r.ready();
    const carol = uid('carol');
    const a = await pool.connect('/', asUser(carol, { device: 'phone' }, { query: { v: '2' } }));
    const s = await waitFor(() => sockets.find((x) => x.id === a.id), 5000, 'the connection event');
    assert.equal(s.userId, carol);
    assert.deepEqual(s.handshake.auth, { device: 'phone' });
    assert.equal(s.handshake.query.v, '2');
    assert.ok(s.handshake.transport);
    a.socket.on('ping?', (n, ack) => ack(n + 1));
    assert.equal(await s.timeout(2000).emitWithAck('ping?', 1), 2);
    const [joined] = await a.emitWithAckArgs('join-chat', 'chat-1');
    assert.ok(joined.rooms.includes('chat-1'));
    const b = await pool.connect();
    await rc.in(b.id).socketsJoin('chat-1');
    const [ok] = await a.emitWithAckArgs('typing', 'chat-1');
    assert.equal(ok, 'ok');
    await b.nextEvent('typing', ([body]) => body.from === carol);
    assert.equal(a.count('typing'), 0);
    const id = a.id; // socket.io-client forgets it on close
    a.socket.close();
    await waitFor(() => reasons.get(id), 5000, 'the disconnect');
    assert.equal(reasons.get(id), 'client namespace disconnect');
    assert.equal(s.connected, false);
    // The backend disconnects one: both sides see it.
    const bs = await waitFor(() => sockets.find((x) => x.id === b.id), 5000, 'the second connection');
    const clientSide = new Promise((resolve) => b.socket.once('disconnect', resolve));
    await bs.disconnect();
    assert.equal(await clientSide, 'io server disconnect');
    await waitFor(() => reasons.get(bs.id), 5000, 'the server-side disconnect');
    assert.equal(reasons.get(bs.id), 'server namespace disconnect');
  });

  it('a listener that throws goes to "error"; a stream refused for good rejects ready()', async () => {
    const r = fresh();
    const errors = [];
    r.on('error', (err) => errors.push(err));
    r.on('connection', (socket) => {
      socket.on('boom', () => {
        throw new Error('listener failed');
      });
      socket.on('after', (ack) => ack('still here'));
    });
    await r.ready();
    const a = await pool.connect();
    a.socket.emit('boom');
    assert.deepEqual(await a.emitWithAckArgs('after'), ['still here']);
    await waitFor(() => errors.find((e) => e.message === 'listener failed'), 5000, 'the error');

    const bad = fresh({ apiKey: 'wrong' });
    const badErrors = [];
    bad.on('error', (err) => badErrors.push(err));
    bad.on('connection', () => {});
    const err = await bad.ready().then(() => assert.fail('expected a rejection'), (e) => e);
    assert.equal(err.code, status.UNAUTHENTICATED);
    await waitFor(() => badErrors.length === 2, 5000, 'both streams to report the error');
  });

  it('of(namespace) selects and watches another namespace', async () => {
    const admin = rc.of('/admin');
    const a = await pool.connect('/admin');
    const b = await pool.connect('/');
    assert.deepEqual((await admin.fetchSockets()).map((s) => s.id), [a.id]);
    await admin.emit('ns', 'admin');
    await a.nextEvent('ns');
    await rc.to(b.id).emit('marker');
    await b.nextEvent('marker');
    assert.equal(b.count('ns'), 0);
  });

  it('reliable emits are resent until the client acks, and delivery says acked', async () => {
    const dave = uid('dave');
    const id = await rc.toUser(dave).emitReliable('invoice', { total: 5 }, { ttlMs: 60_000 });
    assert.ok(typeof id === 'string' && id.length > 0);
    assert.equal((await rc.delivery(id)).status, 'pending');
    const inbox = await rc.inbox(dave);
    assert.deepEqual(inbox.map((m) => m.messageId), [id]);
    const a = pool.open('/', asUser(dave));
    a.socket.on('invoice', (body, { messageId }, ack) => ack());
    await a.nextEvent('invoice', ([body, meta]) => body.total === 5 && meta.messageId === id);
    await waitFor(async () => (await rc.delivery(id)).status === 'acked', 10_000, 'the delivery to be acked');
    await assert.rejects(
      rc.toUser(dave).emitReliable('invoice', {}),
      (err) => err instanceof TypeError,
    );
  });

  it('presence helpers: presence(userIds) and on("user-status")', async () => {
    const r = fresh();
    const statuses = [];
    r.on('user-status', (s) => statuses.push(s));
    await r.ready();
    const erin = uid('erin');
    const a = await pool.connect('/', asUser(erin));
    await waitFor(() => statuses.find((s) => s.userId === erin && s.status === 'online'), 5000, 'online status');
    const [p] = await rc.presence([erin]);
    assert.equal(p.online, true);
    assert.equal(p.sockets, 1);
    a.socket.close();
    await waitFor(() => statuses.find((s) => s.userId === erin && s.status === 'offline'), 5000, 'offline status');
  });

  it('errors are RoomcastError with the gRPC code', async () => {
    const bad = fresh({ apiKey: 'wrong' });
    const err = await bad.emit('x').then(() => assert.fail('expected an error'), (e) => e);
    assert.ok(err instanceof RoomcastError);
    assert.equal(err.code, status.UNAUTHENTICATED);
    await assert.rejects(rc.emit('connect'), TypeError);
  });

  it('replicas with one group share the sockets: each connect goes to one, every event is handled and acked', async () => {
    const group = `g-${process.pid}`;
    const replicas = ['r1', 'r2'].map((name) => {
      const r = fresh({ group, sweepMs: 200 });
      r.seen = new Map();
      r.on('connection', (socket) => {
        r.seen.set(socket.id, socket);
        socket.on('whoami', (ack) => ack({ replica: name, user: socket.userId }));
      });
      return r;
    });
    await Promise.all(replicas.map((r) => r.ready()));
    const users = [0, 1, 2, 3].map(() => uid('grp'));
    const clients = await Promise.all(users.map((u) => pool.connect('/', asUser(u))));
    const ids = clients.map((c) => c.id);
    for (const [i, c] of clients.entries()) {
      const [me] = await c.emitWithAckArgs('whoami');
      assert.equal(me.user, users[i]);
    }
    // Every connect reached one replica: each socket has its handshake auth (`{}` once the token is left out) there.
    await waitFor(
      () => ids.every((id) => replicas.some((r) => r.seen.get(id)?.handshake.auth !== undefined)),
      5000,
      'every connect',
    );
    for (const id of ids) {
      const withAuth = replicas.map((r) => r.seen.get(id)).filter((sock) => sock?.handshake.auth !== undefined);
      assert.deepEqual(withAuth[0].handshake.auth, {});
    }
    for (const c of clients) c.socket.close();
    // Each replica forgets every socket: by its disconnect event, or by the sweep when another replica got it.
    await waitFor(() => replicas.every((r) => ids.every((id) => !r.sockets.has(id))), 10_000, 'the replicas to forget the sockets');
  });

  it('streams reconnect when the gRPC server restarts, and say so', async () => {
    const r = fresh({ backoff: { initialDelayMs: 50, maxDelayMs: 500 } });
    const connected = [];
    const reconnects = [];
    r.on('connection', (socket) => connected.push(socket.id));
    r.on('reconnect', (info) => reconnects.push(info));
    const probe = async () => {
      const c = await pool.connect();
      await waitFor(() => connected.includes(c.id), 5000, 'the connection event');
      c.socket.close();
    };
    const reasons = new Map();
    r.on('connection', (socket) => socket.on('disconnect', (reason) => reasons.set(socket.id, reason)));
    await r.ready();
    await probe();
    const kept = await pool.connect();
    const keptId = kept.id;
    await waitFor(() => connected.includes(keptId), 5000, 'the kept socket\'s connection');
    // Standalone: the whole process goes (and its sockets with it); cluster: the
    // control plane does, and a socket closes while it is down.
    const gone = server.kind === 'cluster' ? server.controls[0] : server;
    await gone.kill();
    kept.socket.close();
    await gone.restart();
    await waitFor(() => reconnects.some((x) => x.stream === 'connections') && reconnects.some((x) => x.stream === 'events'), 20_000, 'both streams to reconnect');
    await probe();
    // Its disconnect came while no stream was open: found by the check after the reconnect.
    await waitFor(() => reasons.get(keptId), 5000, 'the missed disconnect');
    assert.equal(reasons.get(keptId), MISSED_DISCONNECT);
  });
});
