// Socket.IO connection state recovery through the official socket.io-client:
// a client that loses its transport and comes back within the window — to
// another edge, in a cluster — gets its socket id, its rooms and every event
// of its recoverable rooms it missed, in order and once; `socket.recovered`
// tells it so. That holds too when its edge was killed with SIGKILL (ADR 18),
// and its user stays online. After the window, or as another user, it gets a
// fresh socket. Runs against `roomcast standalone`, or
// (ROOMCAST_E2E_TARGET=cluster) three edges and a control plane over NATS with
// the history in JetStream.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  claims,
  createRoomcastClient,
  fetchMetrics,
  signHs256,
  SocketPool,
  startTarget,
  targetKind,
  waitConnected,
  waitFor,
} from './lib/index.mjs';

const SECRET = 'e2e-recovery-hs256-secret-with-enough-bytes';
const API_KEY = 'e2e-recovery-key';
const SHORT_WINDOW_MS = 1500;

const token = (user) => signHs256(claims(user), SECRET);
const args = (...values) => JSON.stringify(values);

/** The `n` of every `feed` event received after index `from`, with its offset. */
function feed(client, from = 0) {
  return client.received
    .slice(from)
    .filter((e) => e.event === 'feed')
    .map((e) => ({ n: e.args[0].n, offset: e.args.at(-1) }));
}

/**
 * Registers a target with recovery on for rooms `feed-*` and the given window,
 * a gRPC client and a SocketPool; returns them (set before the suite's tests
 * run) with the helpers the tests share.
 */
function useRecoveryTarget(windowMs, extraArgs = []) {
  const state = {};
  before(async () => {
    state.server = await startTarget([
      '--jwt-secret', SECRET,
      '--api-key', API_KEY,
      '--recovery-room', 'feed-*',
      '--recovery-window-ms', String(windowMs),
      ...extraArgs,
    ]);
    state.api = createRoomcastClient(state.server.grpcAddr, { apiKey: API_KEY });
    state.pool = new SocketPool(state.server.httpUrls);
  });
  afterEach(() => state.pool.closeAll());
  after(async () => {
    state.pool?.closeAll();
    state.api?.close();
    await state.server?.stop();
  });
  state.socketsOf = async (id) => (await state.api.fetchSockets({ target: { socket_ids: [id] } })).sockets;

  /** Connects `user` on the first edge, in `rooms`, and has it receive one event with an offset. */
  state.connectWithOffset = async (user, rooms, transports) => {
    const client = await state.pool.connectAt(0, '/', { auth: { token: token(user) }, transports });
    await state.api.joinRooms({ target: { socket_ids: [client.id] }, rooms });
    await state.api.emit({ to: { rooms: [rooms[0]] }, event: 'feed', args_json: args({ n: -1 }) });
    await client.nextEvent('feed');
    return client;
  };

  /** Closes the client's transport (as a network change would) and waits until the server saw it. */
  state.dropTransport = async (client) => {
    const id = client.id;
    client.socket.io.engine.close();
    await waitFor(async () => (await state.socketsOf(id)).length === 0, 5000, `socket ${id} to be gone`);
    return id;
  };

  /** Reconnects the client's Manager, to the `index`-th edge. */
  state.reconnect = async (client, index) => {
    client.socket.io.uri = state.pool.urlAt(index);
    const seen = client.received.length;
    client.socket.connect();
    await waitConnected(client.socket);
    return seen;
  };
  return state;
}

describe('connection state recovery within the window', () => {
  const state = useRecoveryTarget(60_000);
  let server;
  let api;
  let pool;
  let socketsOf, connectWithOffset, dropTransport, reconnect;
  before(() => ({ server, api, pool, socketsOf, connectWithOffset, dropTransport, reconnect } = state));

  for (const transports of [['websocket'], ['polling']]) {
    it(`gives back the socket, its rooms and 100 missed events in order, once (${transports})`, async () => {
      const client = await connectWithOffset('alice', ['feed-1', 'lobby'], transports);
      assert.ok(client.socket._pid, 'the CONNECT reply carries a pid');
      const id = await dropTransport(client);
      for (let n = 0; n < 100; n++) {
        await api.emit({ to: { rooms: ['feed-1'] }, event: 'feed', args_json: args({ n }) });
      }
      const seen = await reconnect(client, 1);
      assert.equal(client.socket.recovered, true);
      assert.equal(client.id, id, 'same socket id');
      await waitFor(() => feed(client, seen).length >= 100, 5000, 'the missed events');
      const got = feed(client, seen);
      assert.deepEqual(got.map((e) => e.n), [...Array(100).keys()], 'every missed event, in order, once');
      const offsets = got.map((e) => BigInt(e.offset));
      assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), 'offsets increase');

      const [socket] = await socketsOf(id);
      assert.deepEqual([...socket.rooms].sort(), [id, 'feed-1', 'lobby'].sort(), 'rooms restored');
      if (server.kind === 'cluster') assert.equal(socket.node_id, 'edge-2', 'recovered on another edge');

      // Live traffic flows again, once, after the replay; other rooms too.
      await api.emit({ to: { rooms: ['feed-1'] }, event: 'feed', args_json: args({ n: 100 }) });
      await api.emit({ to: { rooms: ['lobby'] }, event: 'lobby', args_json: args('hi') });
      await client.nextEvent('lobby');
      await waitFor(() => feed(client, seen).length === 101, 5000, 'the live event');
      assert.deepEqual(feed(client, seen).map((e) => e.n), [...Array(101).keys()]);

      // Calls by socket id and by user find the socket where it is now (in a
      // cluster its id still names the first edge).
      await api.emit({ to: { socket_ids: [id] }, event: 'direct', args_json: args('by id') });
      await client.nextEvent('direct', (a) => a[0] === 'by id');
      await api.emit({ to: { user_ids: ['alice'] }, event: 'direct', args_json: args('by user') });
      await client.nextEvent('direct', (a) => a[0] === 'by user');
      await api.joinRooms({ target: { socket_ids: [id] }, rooms: ['after-recovery'] });
      await api.emit({ to: { rooms: ['after-recovery'] }, event: 'direct', args_json: args('joined') });
      await client.nextEvent('direct', (a) => a[0] === 'joined');
      const byUser = await api.fetchSockets({ target: { user_ids: ['alice'] } });
      assert.deepEqual(byUser.sockets.map((s) => s.id), [id], 'fetched by user where it is now');
    });
  }

  it('events of rooms that are not recoverable are not replayed, and carry no offset', async () => {
    const client = await connectWithOffset('alice', ['feed-2', 'plain'], ['websocket']);
    await api.emit({ to: { rooms: ['plain'] }, event: 'plain', args_json: args({ live: true }) });
    const [live] = await client.nextEvent('plain');
    assert.deepEqual(live, { live: true });
    assert.equal(client.argsOf('plain')[0].length, 1, 'no offset argument');
    await dropTransport(client);
    await api.emit({ to: { rooms: ['plain'] }, event: 'plain', args_json: args({ missed: true }) });
    await api.emit({ to: { rooms: ['feed-2'] }, event: 'feed', args_json: args({ n: 0 }) });
    const seen = await reconnect(client, 0);
    assert.equal(client.socket.recovered, true);
    await waitFor(() => feed(client, seen).length === 1, 5000, 'the missed recoverable event');
    // Sentinel: a live event to `plain` after the replay shows the missed one never came.
    await api.emit({ to: { rooms: ['plain'] }, event: 'plain', args_json: args({ after: true }) });
    await client.nextEvent('plain', ([a]) => a.after);
    assert.deepEqual(
      client.argsOf('plain').map(([a]) => a),
      [{ live: true }, { after: true }],
    );
  });

  it('an emit to several of its rooms, recoverable or not, comes once live, once in the replay, once after', async () => {
    const client = await connectWithOffset('alice', ['feed-6a', 'feed-6b', 'plain-6'], ['websocket']);
    await api.emit({ to: { rooms: ['feed-6a', 'plain-6', 'feed-6b'] }, event: 'feed', args_json: args({ n: 0 }) });
    await waitFor(() => feed(client).length === 2, 5000, 'the live multi-room event');
    await dropTransport(client);
    for (let n = 1; n <= 20; n++) {
      await api.emit({ to: { rooms: ['feed-6b', 'feed-6a', 'plain-6'] }, event: 'feed', args_json: args({ n }) });
    }
    await api.emit({ to: { rooms: ['plain-6', 'feed-6a'] }, event: 'feed', args_json: args({ n: 21 }) });
    const seen = await reconnect(client, 1);
    assert.equal(client.socket.recovered, true);
    await waitFor(() => feed(client, seen).length >= 21, 5000, 'the missed events');
    await api.emit({ to: { rooms: ['feed-6a', 'feed-6b'] }, event: 'feed', args_json: args({ n: 22 }) });
    await api.emit({ to: { rooms: ['feed-6b'] }, event: 'feed', args_json: args({ n: 23 }) });
    await waitFor(() => feed(client).some((e) => e.n === 23), 5000, 'the live events after the replay');
    assert.deepEqual(
      feed(client).map((e) => e.n),
      [-1, ...Array(24).keys()],
      'each event once, in order: live, replayed, live again',
    );
  });

  it("another user cannot take over a socket with its pid", async () => {
    const alice = await connectWithOffset('alice', ['feed-4'], ['websocket']);
    const pid = alice.socket._pid;
    const offset = alice.socket._lastOffset;
    const id = await dropTransport(alice);
    const mallory = await pool.connectAt(0, '/', {
      auth: { token: token('mallory'), pid, offset },
      transports: ['websocket'],
    });
    assert.equal(mallory.socket.recovered, false);
    assert.notEqual(mallory.id, id);
    // And the pid was not spent: alice still recovers.
    await reconnect(alice, 0);
    assert.equal(alice.socket.recovered, true);
    assert.equal(alice.id, id);
  });

  it('a pid of a socket still connected, on this edge or another, is not taken over', async () => {
    const alice = await connectWithOffset('alice', ['feed-8'], ['websocket']);
    const { _pid: pid, _lastOffset: offset } = alice.socket;
    const other = server.kind === 'cluster' ? 1 : 0;
    const adminOf = (i) => (server.kind === 'cluster' ? server.edges[i].adminUrl : server.adminUrl);
    // Its edge has written its session record.
    await waitFor(
      async () => (await fetchMetrics(adminOf(0))).get('roomcast_edge_session_records_queued') === 0,
      5000,
      'the session records to be written',
    );
    const adminUrl = adminOf(other);
    const refusals = async () =>
      (await fetchMetrics(adminUrl)).get('roomcast_edge_recoveries_total{outcome="still_connected"}') ?? 0;
    const refusedBefore = await refusals();
    const thief = await pool.connectAt(other, '/', {
      auth: { token: token('alice'), pid, offset },
      transports: ['websocket'],
    });
    assert.equal(thief.socket.recovered, false, 'a fresh socket');
    assert.notEqual(thief.id, alice.id);
    assert.equal(await refusals(), refusedBefore + 1, 'refused as still connected');
    // The connected socket keeps its rooms and its events.
    await api.emit({ to: { rooms: ['feed-8'] }, event: 'feed', args_json: args({ n: 0 }) });
    await waitFor(() => feed(alice).some((e) => e.n === 0), 5000, 'the event on the connected socket');
    assert.deepEqual(feed(thief), [], 'nothing for the fresh socket');
    // And the pid was not spent: once its transport is gone, alice recovers.
    const id = await dropTransport(alice);
    await reconnect(alice, other);
    assert.equal(alice.socket.recovered, true);
    assert.equal(alice.id, id);
  });

  it('clients of an edge that shuts down recover on another edge', async (t) => {
    if (server.kind !== 'cluster') return t.skip('needs a cluster');
    const client = await connectWithOffset('alice', ['feed-5'], ['websocket']);
    const id = client.id;
    const closed = new Promise((resolve) => client.socket.once('disconnect', resolve));
    await server.edges[0].stop();
    try {
      assert.equal(await closed, 'transport close');
      for (let n = 0; n < 10; n++) {
        await api.emit({ to: { rooms: ['feed-5'] }, event: 'feed', args_json: args({ n }) });
      }
      const seen = await reconnect(client, 1);
      assert.equal(client.socket.recovered, true);
      assert.equal(client.id, id);
      await waitFor(() => feed(client, seen).length >= 10, 5000, 'the missed events');
      assert.deepEqual(feed(client, seen).map((e) => e.n), [...Array(10).keys()]);
    } finally {
      await server.edges[0].restart();
    }
  });

  it('a pid or offset that is not ours gives a fresh socket, not an error', async () => {
    for (const auth of [
      { pid: 'nope', offset: '1' },
      { pid: '../../etc', offset: 'x' },
      { pid: 12, offset: {} },
      { pid: 'a'.repeat(5000), offset: '99999999999999999999999' },
    ]) {
      const client = await pool.connectAt(0, '/', {
        auth: { token: token('alice'), ...auth },
        transports: ['websocket'],
      });
      assert.equal(client.socket.recovered, false, JSON.stringify(auth).slice(0, 40));
      client.socket.close();
    }
  });
});

describe('connection state recovery after the window', () => {
  const state = useRecoveryTarget(SHORT_WINDOW_MS);
  let server;
  let api;
  let pool;
  let socketsOf, connectWithOffset, dropTransport, reconnect;
  before(() => ({ server, api, pool, socketsOf, connectWithOffset, dropTransport, reconnect } = state));

  it('after the window the client gets a fresh socket', async () => {
    const client = await connectWithOffset('alice', ['feed-3'], ['websocket']);
    const id = await dropTransport(client);
    const closedAt = Date.now();
    await api.emit({ to: { rooms: ['feed-3'] }, event: 'feed', args_json: args({ n: 0 }) });
    // The only way to be past the window is to let it pass.
    await waitFor(() => Date.now() > closedAt + SHORT_WINDOW_MS + 500, SHORT_WINDOW_MS + 2000, 'the window to pass', 100);
    const seen = await reconnect(client, 1);
    assert.equal(client.socket.recovered, false);
    assert.notEqual(client.id, id, 'a new socket id');
    const [socket] = await socketsOf(client.id);
    assert.deepEqual(socket.rooms, [client.id], 'in no room');
    await api.emit({ to: { socket_ids: [client.id] }, event: 'sentinel', args_json: args(1) });
    await client.nextEvent('sentinel');
    assert.deepEqual(feed(client, seen), [], 'nothing replayed');
  });
});

describe('connection state recovery after an edge crash', () => {
  const LEASE_TTL_MS = 1500;
  const GRACE_MS = 1000;
  const state = useRecoveryTarget(60_000, [
    '--presence-lease-ttl-ms', String(LEASE_TTL_MS),
    '--presence-grace-ms', String(GRACE_MS),
    '--presence-audience', 'namespace',
    // Calls for a socket of the dead edge's route tag wait for that edge
    // until the control plane takes it for dead (ADR 16, ADR 18).
    ...(targetKind() === 'cluster' ? ['--edge-ttl-ms', '3000'] : []),
  ]);
  let server;
  let api;
  let pool;
  let socketsOf, reconnect;
  before(() => ({ server, api, pool, socketsOf, reconnect } = state));

  it('a client whose edge was killed with SIGKILL recovers on another edge: same id, every room, each missed event once, in order; its user stays online', async (t) => {
    if (server.kind !== 'cluster') return t.skip('needs a cluster');
    const [alice, bob] = ['crash-alice', 'crash-bob'];
    const observer = await pool.connectAt(1, '/', { auth: { token: token('crash-observer') }, transports: ['websocket'] });
    const statuses = [];
    observer.socket.on('user-status-change', (body) => statuses.push(body));
    const statusesOf = (user) => statuses.filter((s) => s.userId === user).map((s) => s.status);

    // Alice: a room from her token, two through JoinRooms (one recoverable).
    const client = await pool.connectAt(0, '/', {
      auth: { token: signHs256(claims(alice, { rooms: ['tok-7'] }), SECRET) },
      transports: ['websocket'],
    });
    await api.joinRooms({ target: { socket_ids: [client.id] }, rooms: ['feed-7', 'lobby-7'] });
    await api.emit({ to: { rooms: ['feed-7'] }, event: 'feed', args_json: args({ n: -1 }) });
    await client.nextEvent('feed');
    // Bob is on the same edge and does not come back: his offline marks the
    // moment alice's would have come, had she gone offline.
    const other = await pool.connectAt(0, '/', { auth: { token: token(bob) }, transports: ['websocket'] });
    other.socket.io.reconnection(false);
    await waitFor(() => statusesOf(alice).includes('online') && statusesOf(bob).includes('online'), 5000, 'both online');
    const id = client.id;
    // The edge has written what it keeps of alice's socket (the join included).
    const edge = server.edges[0];
    await waitFor(
      async () => (await fetchMetrics(edge.adminUrl)).get('roomcast_edge_session_records_queued') === 0,
      5000,
      'the session records to be written',
    );

    t.after(() => edge.restart());
    const closed = new Promise((resolve) => client.socket.once('disconnect', resolve));
    await edge.kill();
    assert.equal(await closed, 'transport close');
    for (let n = 0; n < 10; n++) {
      await api.emit({ to: { rooms: ['feed-7'] }, event: 'feed', args_json: args({ n }) });
    }
    const seen = await reconnect(client, 1);
    assert.equal(client.socket.recovered, true, 'recovered');
    assert.equal(client.id, id, 'same socket id');
    await waitFor(() => feed(client, seen).length >= 10, 5000, 'the missed events');
    const socket = await waitFor(
      () => socketsOf(id).then(([found]) => found, () => false),
      20_000,
      'FetchSockets to answer once the control plane took the dead edge for dead',
    );
    assert.deepEqual([...socket.rooms].sort(), [id, 'tok-7', 'feed-7', 'lobby-7'].sort(), 'rooms restored');
    assert.equal(socket.node_id, 'edge-2', 'recovered on another edge');

    // Live events after the replay, once; the other JoinRooms room too.
    await api.emit({ to: { rooms: ['feed-7'] }, event: 'feed', args_json: args({ n: 10 }) });
    await api.emit({ to: { rooms: ['lobby-7'] }, event: 'lobby', args_json: args('hi') });
    await client.nextEvent('lobby');
    await api.emit({ to: { socket_ids: [id] }, event: 'sentinel', args_json: args(1) });
    await client.nextEvent('sentinel');
    assert.deepEqual(feed(client, seen).map((e) => e.n), [...Array(11).keys()], 'every missed event, in order, once, then live');

    // Once bob is offline the dead edge's sockets were cleaned up and the
    // grace ran out: alice never went offline.
    await waitFor(() => statusesOf(bob).includes('offline'), LEASE_TTL_MS * 3 + GRACE_MS + 10_000, 'bob to go offline');
    assert.deepEqual(statusesOf(alice), ['online'], 'alice stays online');
    const { users } = await api.getPresence({ user_ids: [alice] });
    assert.equal(users[0].online, true, 'online');
    assert.equal(users[0].sockets, 1, 'her one socket, on the edge it moved to');
  });
});
