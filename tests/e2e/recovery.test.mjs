// Socket.IO connection state recovery through the official socket.io-client:
// a client that loses its transport and comes back within the window — to
// another edge, in a cluster — gets its socket id, its rooms and every event
// of its recoverable rooms it missed, in order and once; `socket.recovered`
// tells it so. After the window, or as another user, it gets a fresh socket.
// Runs against `roomcast standalone`, or (ROOMCAST_E2E_TARGET=cluster) three
// edges and a control plane over NATS with the history in JetStream.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  claims,
  createRoomcastClient,
  signHs256,
  SocketPool,
  startTarget,
  waitConnected,
  waitFor,
} from './lib/index.mjs';

const SECRET = 'e2e-recovery-hs256-secret-with-enough-bytes';
const API_KEY = 'e2e-recovery-key';
const WINDOW_MS = 1500;

const token = (user) => signHs256(claims(user), SECRET);
const args = (...values) => JSON.stringify(values);

/** The `n` of every `feed` event received after index `from`, with its offset. */
function feed(client, from = 0) {
  return client.received
    .slice(from)
    .filter((e) => e.event === 'feed')
    .map((e) => ({ n: e.args[0].n, offset: e.args.at(-1) }));
}

describe('connection state recovery', () => {
  let server;
  let api;
  let pool;

  before(async () => {
    server = await startTarget([
      '--jwt-secret', SECRET,
      '--api-key', API_KEY,
      '--recovery-room', 'feed-*',
      '--recovery-window-ms', String(WINDOW_MS),
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

  const socketsOf = async (id) => (await api.fetchSockets({ target: { socket_ids: [id] } })).sockets;

  /** Connects `user` on the first edge, in `rooms`, and has it receive one event with an offset. */
  async function connectWithOffset(user, rooms, transports) {
    const client = await pool.connectAt(0, '/', { auth: { token: token(user) }, transports });
    await api.joinRooms({ target: { socket_ids: [client.id] }, rooms });
    await api.emit({ to: { rooms: [rooms[0]] }, event: 'feed', args_json: args({ n: -1 }) });
    await client.nextEvent('feed');
    return client;
  }

  /** Closes the client's transport (as a network change would) and waits until the server saw it. */
  async function dropTransport(client) {
    const id = client.id;
    client.socket.io.engine.close();
    await waitFor(async () => (await socketsOf(id)).length === 0, 5000, `socket ${id} to be gone`);
    return id;
  }

  /** Reconnects the client's Manager, to the `index`-th edge. */
  async function reconnect(client, index) {
    client.socket.io.uri = pool.urlAt(index);
    const seen = client.received.length;
    client.socket.connect();
    await waitConnected(client.socket);
    return seen;
  }

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

  it('after the window the client gets a fresh socket', async () => {
    const client = await connectWithOffset('alice', ['feed-3'], ['websocket']);
    const id = await dropTransport(client);
    const closedAt = Date.now();
    await api.emit({ to: { rooms: ['feed-3'] }, event: 'feed', args_json: args({ n: 0 }) });
    // The only way to be past the window is to let it pass.
    await waitFor(() => Date.now() > closedAt + WINDOW_MS + 500, WINDOW_MS + 2000, 'the window to pass', 100);
    const seen = await reconnect(client, 1);
    assert.equal(client.socket.recovered, false);
    assert.notEqual(client.id, id, 'a new socket id');
    const [socket] = await socketsOf(client.id);
    assert.deepEqual(socket.rooms, [client.id], 'in no room');
    await api.emit({ to: { socket_ids: [client.id] }, event: 'sentinel', args_json: args(1) });
    await client.nextEvent('sentinel');
    assert.deepEqual(feed(client, seen), [], 'nothing replayed');
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
