// Cluster mode: edges and control planes as separate processes over real
// nats-server, the official socket.io-client spread over three edges, and gRPC
// backends talking to the control planes. Each test uses its own rooms and event
// names; sockets are closed after every test.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  SocketPool,
  claims,
  createRoomcastClient,
  fetchMetrics,
  httpGet,
  readyzStatus,
  roomSubject,
  settle,
  signHs256,
  startCluster,
  waitFor,
  waitReady,
} from './lib/index.mjs';

const SECRET = 'e2e-cluster-hs256-secret-0123456789abcdef';
const EDGE_ARGS = ['--namespace', '/', '--namespace', '/admin', '--jwt-secret', SECRET];
const EDGES = [0, 1, 2];

const args = (...values) => JSON.stringify(values);
const asUser = (sub, rooms = [], opts = {}) => ({
  auth: { token: signHs256(claims(sub, { rooms }), SECRET) },
  ...opts,
});
const sorted = (list) => [...list].sort();
const edgeConnectionName = (edge) => `roomcast-edge-${edge.nodeId}`;
const controlConnectionName = (control) => `roomcast-control-${control.nodeId}`;

/** Every disconnect reason a client's socket reports, in order. */
function recordDisconnects(client) {
  const reasons = [];
  client.socket.on('disconnect', (reason) => reasons.push(reason));
  return reasons;
}

/** One client per edge (index i on edge i), each in `rooms`. */
function connectOnEveryEdge(pool, name, rooms = [], opts = {}) {
  return Promise.all(EDGES.map((i) => pool.connectAt(i, '/', asUser(`${name}-${i}`, rooms, opts))));
}

/** A cluster with socket.io-client and gRPC clients for it, as one suite uses them. */
async function startSuite(options) {
  const cluster = await startCluster({ edges: 3, edgeArgs: EDGE_ARGS, ...options });
  const api = createRoomcastClient(cluster.grpcAddr);
  const pool = new SocketPool(cluster.httpUrls);
  return {
    cluster,
    api,
    pool,
    async stop() {
      pool.closeAll();
      api.close();
      await cluster.stop();
    },
  };
}

/** The room subjects the edge's NATS connection is subscribed to, or undefined. */
async function roomSubscriptions(cluster, edge) {
  const subjects = await cluster.nats.subscriptionsOf(edgeConnectionName(edge));
  return subjects?.filter((s) => s.startsWith(`rc.${cluster.cluster}.room.`));
}

describe('roomcast cluster: 3 edges, 2 control planes, 1 nats-server', { timeout: 300_000 }, () => {
  let suite;
  let cluster;
  let api;
  let pool;

  before(async () => {
    suite = await startSuite({ natsNodes: 1, controls: 2 });
    ({ cluster, api, pool } = suite);
  });

  afterEach(() => pool.closeAll());

  after(() => suite?.stop());

  const subject = (room) => roomSubject(room, { cluster: cluster.cluster });

  describe('processes', () => {
    // First: no other test has connected a client yet.
    it('every process is live, ready and connected to NATS under its own name', async () => {
      const processes = [...cluster.edges, ...cluster.controls];
      assert.deepEqual(
        processes.map((p) => p.nodeId),
        ['edge-1', 'edge-2', 'edge-3', 'control-1', 'control-2'],
      );
      for (const p of processes) {
        assert.equal((await httpGet(`${p.adminUrl}/healthz`)).status, 200, `${p.nodeId} /healthz`);
        assert.equal(await readyzStatus(p.adminUrl), 200, `${p.nodeId} /readyz`);
        assert.equal((await fetchMetrics(p.adminUrl)).get('roomcast_nats_connected'), 1, `${p.nodeId} nats gauge`);
      }
      const names = [
        ...cluster.edges.map(edgeConnectionName),
        ...cluster.controls.map(controlConnectionName),
      ];
      for (const name of names) {
        assert.ok(await cluster.nats.connection(name), `nats-server has a connection named ${name}`);
      }
    });

    it('an edge counts the client connections it holds', async () => {
      const gauges = () =>
        Promise.all(cluster.edges.map(async (e) => (await fetchMetrics(e.adminUrl)).get('roomcast_edge_connections')));
      await waitFor(async () => (await gauges()).every((n) => n === 0), 10_000, 'every edge to hold no connection');

      await connectOnEveryEdge(pool, 'counted');
      await pool.connectAt(0, '/', asUser('counted-extra'));
      await waitFor(
        async () => JSON.stringify(await gauges()) === JSON.stringify([2, 1, 1]),
        10_000,
        'roomcast_edge_connections to read 2, 1, 1',
      );

      pool.closeAll();
      await waitFor(async () => (await gauges()).every((n) => n === 0), 10_000, 'the gauges to go back to 0');
    });
  });

  describe('emits across edges', () => {
    it('an emit to a room reaches each member on every edge exactly once', async () => {
      const members = [
        ...(await connectOnEveryEdge(pool, 'member', ['everywhere'])),
        ...(await connectOnEveryEdge(pool, 'member-ws', ['everywhere'], { transports: ['websocket'] })),
      ];
      const outsiders = await connectOnEveryEdge(pool, 'outsider');

      await api.emit({ to: { rooms: ['everywhere'] }, event: 'news', args_json: args({ text: 'hi' }, 1) });
      await settle(api, [...members, ...outsiders], { rooms: ['everywhere'] });

      for (const m of members) assert.deepEqual(m.argsOf('news'), [[{ text: 'hi' }, 1]], `member ${m.id}`);
      for (const o of outsiders) assert.equal(o.count('news'), 0, `outsider ${o.id}`);
    });

    it('a multi-room emit reaches sockets in several of the rooms once, wherever they are', async () => {
      const redOnly = await pool.connectAt(0, '/', asUser('red-only', ['red']));
      const blueOnly = await pool.connectAt(1, '/', asUser('blue-only', ['blue']));
      const both = await Promise.all(EDGES.map((i) => pool.connectAt(i, '/', asUser(`both-${i}`, ['red', 'blue']))));
      const neither = await pool.connectAt(2, '/', asUser('neither', ['green']));
      const everyone = [redOnly, blueOnly, ...both, neither];

      // Order is kept per room, not across rooms: settle in between.
      await api.emit({ to: { rooms: ['red', 'blue'] }, event: 'colors', args_json: args('red+blue') });
      await settle(api, everyone, { rooms: ['red', 'blue'] });
      await api.emit({ to: { rooms: ['blue', 'red'] }, event: 'colors', args_json: args('blue+red') });
      await settle(api, everyone, { rooms: ['red', 'blue'] });

      for (const c of [redOnly, blueOnly, ...both]) {
        assert.deepEqual(c.argsOf('colors'), [['red+blue'], ['blue+red']], `socket ${c.id}`);
      }
      assert.equal(neither.count('colors'), 0);
    });

    it('except rooms and except socket ids leave out sockets on every edge', async () => {
      // Per edge: one muted member and one plain member; the plain member of
      // edge 3 is left out by id.
      const muted = await connectOnEveryEdge(pool, 'muted', ['all-hands', 'muted']);
      const plain = await connectOnEveryEdge(pool, 'plain', ['all-hands']);
      const skipped = plain[2];
      const everyone = [...muted, ...plain];
      const except = { except_rooms: ['muted'], except_socket_ids: [skipped.id] };

      await api.emit({ to: { rooms: ['all-hands'], ...except }, event: 'memo', args_json: args('room') });
      await settle(api, everyone, { rooms: ['all-hands'] });
      await api.emit({ to: except, event: 'memo', args_json: args('namespace') });
      await settle(api, everyone);

      for (const c of [plain[0], plain[1]]) {
        assert.deepEqual(c.argsOf('memo'), [['room'], ['namespace']], `socket ${c.id}`);
      }
      for (const c of [...muted, skipped]) assert.equal(c.count('memo'), 0, `socket ${c.id}`);
    });

    it('emits to socket ids reach sockets on every edge once', async () => {
      const clients = await connectOnEveryEdge(pool, 'direct');
      const [first, second, third] = clients;

      await api.emit({ to: { socket_ids: [first.id, third.id] }, event: 'dm', args_json: args('ids') });
      await api.emit({
        to: { rooms: [second.id], socket_ids: [second.id] },
        event: 'dm',
        args_json: args('own room'),
      });
      await settle(api, clients, { rooms: [second.id] });

      assert.deepEqual(first.argsOf('dm'), [['ids']]);
      assert.deepEqual(second.argsOf('dm'), [['own room']]);
      assert.deepEqual(third.argsOf('dm'), [['ids']]);
    });

    it('one producer\'s emits to a room arrive in order on every edge', async () => {
      const readers = [
        ...(await connectOnEveryEdge(pool, 'reader', ['ordered'])),
        ...(await connectOnEveryEdge(pool, 'reader-ws', ['ordered'], { transports: ['websocket'] })),
      ];
      const expected = Array.from({ length: 300 }, (_, i) => i);
      for (const i of expected) {
        await api.emit({ to: { rooms: ['ordered'] }, event: 'seq', args_json: args(i) });
      }

      for (const r of readers) {
        await waitFor(() => r.count('seq') >= expected.length, 20_000, `socket ${r.id} to get 300 "seq" events`);
      }
      await settle(api, readers, { rooms: ['ordered'] });
      for (const r of readers) assert.deepEqual(r.argsOf('seq').map(([i]) => i), expected, `socket ${r.id}`);
    });
  });

  describe('socket commands through the control plane', () => {
    it('JoinRooms and LeaveRooms apply to sockets on other edges before they return', async () => {
      const [stay, joiner, leaver] = await connectOnEveryEdge(pool, 'mover');

      await api.joinRooms({ target: { socket_ids: [joiner.id, leaver.id] }, rooms: ['lobby'] });
      await api.emit({ to: { rooms: ['lobby'] }, event: 'lobby', args_json: args(1) });
      await settle(api, [stay, joiner, leaver], { rooms: ['lobby'] });
      assert.deepEqual(joiner.argsOf('lobby'), [[1]]);
      assert.deepEqual(leaver.argsOf('lobby'), [[1]]);
      assert.equal(stay.count('lobby'), 0);

      await api.leaveRooms({ target: { socket_ids: [leaver.id] }, rooms: ['lobby'] });
      await api.emit({ to: { rooms: ['lobby'] }, event: 'lobby', args_json: args(2) });
      await settle(api, [stay, joiner, leaver], { rooms: ['lobby'] });
      assert.deepEqual(joiner.argsOf('lobby'), [[1], [2]]);
      assert.deepEqual(leaver.argsOf('lobby'), [[1]]);
      assert.equal(stay.count('lobby'), 0);
    });

    it('the members of a room on every edge can be joined to another room and leave it', async () => {
      const members = await connectOnEveryEdge(pool, 'src-member', ['src']);
      const others = await connectOnEveryEdge(pool, 'src-other');

      await api.joinRooms({ target: { rooms: ['src'] }, rooms: ['dst'] });
      await api.emit({ to: { rooms: ['dst'] }, event: 'dst', args_json: args('moved') });
      await settle(api, [...members, ...others], { rooms: ['dst'] });
      for (const m of members) assert.deepEqual(m.argsOf('dst'), [['moved']], `member ${m.id}`);
      for (const o of others) assert.equal(o.count('dst'), 0, `other ${o.id}`);

      await api.leaveRooms({ target: { rooms: ['dst'] }, rooms: ['dst'] });
      await api.emit({ to: { rooms: ['dst'] }, event: 'dst', args_json: args('gone') });
      await settle(api, [...members, ...others], { rooms: ['dst'] });
      for (const m of members) assert.deepEqual(m.argsOf('dst'), [['moved']], `member ${m.id}`);
    });

    it('FetchSockets describes sockets on every edge: node, user, rooms', async () => {
      const before = Date.now();
      const fetched = await connectOnEveryEdge(pool, 'fetched', ['fetch-room'], { transports: ['websocket'] });
      await pool.connectAt(0, '/', asUser('not-fetched', ['elsewhere']));

      const { sockets } = await api.fetchSockets({ target: { rooms: ['fetch-room'] } });
      assert.deepEqual(sorted(sockets.map((s) => s.id)), sorted(fetched.map((c) => c.id)));
      for (const i of EDGES) {
        const info = sockets.find((s) => s.id === fetched[i].id);
        assert.equal(info.node_id, cluster.edges[i].nodeId, `socket on edge ${i + 1}`);
        assert.equal(info.user_id, `fetched-${i}`);
        assert.equal(info.namespace, '/');
        assert.deepEqual(sorted(info.rooms), sorted(['fetch-room', fetched[i].id]));
        assert.equal(info.transport, 'websocket');
        assert.match(info.remote_addr, /127\.0\.0\.1/);
        const connectedAt = Number(info.connected_at_ms);
        assert.ok(connectedAt >= before - 1000 && connectedAt <= Date.now() + 1000, `connected_at_ms ${connectedAt}`);
      }

      const one = await api.fetchSockets({ target: { socket_ids: [fetched[2].id] } });
      assert.deepEqual(one.sockets.map((s) => [s.id, s.node_id]), [[fetched[2].id, cluster.edges[2].nodeId]]);

      // A join made through the control plane shows in what FetchSockets reports.
      await api.joinRooms({ target: { socket_ids: [fetched[1].id] }, rooms: ['fetch-extra'] });
      const joined = await api.fetchSockets({ target: { rooms: ['fetch-extra'] } });
      assert.deepEqual(joined.sockets.map((s) => s.id), [fetched[1].id]);
      assert.deepEqual(sorted(joined.sockets[0].rooms), sorted(['fetch-room', 'fetch-extra', fetched[1].id]));
    });

    it('DisconnectSockets disconnects sockets on other edges with "io server disconnect"', async () => {
      const [bystander, first, second] = [
        await pool.connectAt(0, '/', asUser('kick-bystander')),
        await pool.connectAt(1, '/', asUser('kicked-1', ['kick-room'])),
        await pool.connectAt(2, '/', asUser('kicked-2', ['kick-room'])),
      ];
      const reasons = [bystander, first, second].map(recordDisconnects);

      const res = await api.disconnectSockets({ target: { rooms: ['kick-room'] } });
      assert.equal(res.disconnected, 2);
      await waitFor(() => reasons[1].length && reasons[2].length, 5000, 'both kicked sockets to be disconnected');
      assert.deepEqual(reasons[1], ['io server disconnect']);
      assert.deepEqual(reasons[2], ['io server disconnect']);

      await waitFor(
        async () => (await api.fetchSockets({ target: { rooms: ['kick-room'] } })).sockets.length === 0,
        5000,
        'FetchSockets to no longer list the disconnected sockets',
      );
      await api.emit({ to: { socket_ids: [bystander.id] }, event: 'still-here', args_json: args(1) });
      assert.deepEqual(await bystander.nextEvent('still-here'), [1]);
      assert.deepEqual(reasons[0], []);
    });

    for (const close of [false, true]) {
      it(`DisconnectSockets with close=${close} ${close ? 'closes' : 'keeps'} the socket's connection`, async () => {
        // One Engine.IO connection to edge 2 carrying "/" and "/admin".
        const mux = pool.manager({}, 1);
        const root = await mux.connect('/', asUser('mux-user'));
        const admin = await mux.connect('/admin', asUser('mux-user'));
        const engine = mux.manager.engine;
        const [rootReasons, adminReasons] = [root, admin].map(recordDisconnects);

        const res = await api.disconnectSockets({ target: { socket_ids: [root.id] }, close });
        assert.equal(res.disconnected, 1);
        await waitFor(() => rootReasons.length, 5000, 'the "/" socket to be disconnected');
        assert.deepEqual(rootReasons, ['io server disconnect']);

        if (close) {
          await waitFor(() => engine.readyState === 'closed', 5000, 'the Engine.IO connection to close');
          await waitFor(() => !admin.socket.connected, 5000, 'the "/admin" socket on that connection to go too');
        } else {
          await api.emit({
            to: { namespace: '/admin', socket_ids: [admin.id] },
            event: 'admin-still-here',
            args_json: args(1),
          });
          assert.deepEqual(await admin.nextEvent('admin-still-here'), [1]);
          assert.equal(engine.readyState, 'open');
          assert.deepEqual(adminReasons, []);
        }
      });
    }
  });

  describe('interest-based routing', () => {
    it('only edges holding a member of a room subscribe to its subject', async () => {
      const room = 'sparse-room';
      const onFirst = await pool.connectAt(0, '/', asUser('sparse-1', [room]));
      const onSecond = await pool.connectAt(1, '/', asUser('sparse-2', [room]));
      const onThird = await pool.connectAt(2, '/', asUser('sparse-3', ['other-room']));
      const [first, second, third] = cluster.edges;

      const subscribed = async (edge) => (await roomSubscriptions(cluster, edge))?.includes(subject(room));
      await waitFor(
        async () => (await subscribed(first)) && (await subscribed(second)),
        5000,
        `edges 1 and 2 to subscribe to ${subject(room)}`,
      );
      assert.equal(await subscribed(third), false, 'edge 3 holds no member and must not subscribe');

      // What the members observe is unchanged by the routing.
      await api.emit({ to: { rooms: [room] }, event: 'sparse', args_json: args('x') });
      await settle(api, [onFirst, onSecond, onThird], { rooms: [room] });
      assert.deepEqual(onFirst.argsOf('sparse'), [['x']]);
      assert.deepEqual(onSecond.argsOf('sparse'), [['x']]);
      assert.equal(onThird.count('sparse'), 0);

      // The last member of an edge leaving (by LeaveRooms, or by disconnecting)
      // ends that edge's subscription.
      await api.leaveRooms({ target: { socket_ids: [onSecond.id] }, rooms: [room] });
      await waitFor(async () => (await subscribed(second)) === false, 5000, 'edge 2 to unsubscribe after the leave');
      onFirst.socket.close();
      await waitFor(
        async () => (await subscribed(first)) === false,
        5000,
        'edge 1 to unsubscribe after the disconnect',
      );
      assert.equal(await subscribed(third), false);
    });

    it('each edge reports as many room subscriptions as nats-server lists for it', async () => {
      await connectOnEveryEdge(pool, 'gauge-a', ['gauge-shared', 'gauge-x']);
      await pool.connectAt(1, '/', asUser('gauge-b', ['gauge-only-2']));

      for (const edge of cluster.edges) {
        await waitFor(
          async () => {
            const fromServer = await roomSubscriptions(cluster, edge);
            const gauge = (await fetchMetrics(edge.adminUrl)).get('roomcast_edge_room_subscriptions');
            return fromServer !== undefined && gauge === fromServer.length;
          },
          5000,
          `${edge.nodeId}'s roomcast_edge_room_subscriptions to match its subscriptions on nats-server`,
        );
      }
      const onSecond = await roomSubscriptions(cluster, cluster.edges[1]);
      const onThird = await roomSubscriptions(cluster, cluster.edges[2]);
      assert.ok(onSecond.includes(subject('gauge-only-2')));
      assert.ok(!onThird.includes(subject('gauge-only-2')));
      assert.ok(onThird.includes(subject('gauge-shared')));
    });
  });

  describe('EmitWithAck across edges', () => {
    it('gathers the acks of every edge and reports the socket that did not answer', async () => {
      const answering = [
        await pool.connectAt(0, '/', asUser('answer-1', ['ack-room'])),
        await pool.connectAt(1, '/', asUser('answer-2', ['ack-room'])),
      ];
      const silent = await pool.connectAt(2, '/', asUser('silent', ['ack-room']));
      answering.forEach((c, i) => c.socket.on('question', (q, ack) => ack({ from: i, q })));

      const timeoutMs = 1500;
      const started = Date.now();
      const res = await api.emitWithAck({
        to: { rooms: ['ack-room'] },
        event: 'question',
        args_json: args('ready?'),
        timeout_ms: timeoutMs,
      });
      const elapsed = Date.now() - started;

      assert.ok(elapsed >= timeoutMs - 100, `returned after ${elapsed}ms, before the ${timeoutMs}ms timeout`);
      assert.ok(elapsed < timeoutMs + 2500, `returned after ${elapsed}ms, long after the ${timeoutMs}ms timeout`);
      assert.equal(res.complete, true);
      assert.deepEqual(sorted(res.results.map((r) => r.socket_id)), sorted([...answering, silent].map((c) => c.id)));
      answering.forEach((c, i) => {
        const result = res.results.find((r) => r.socket_id === c.id);
        assert.equal(result.acked, true, `socket on edge ${i + 1} acked`);
        assert.equal(result.node_id, cluster.edges[i].nodeId);
        assert.deepEqual(JSON.parse(result.args_json), [{ from: i, q: 'ready?' }]);
      });
      const unanswered = res.results.find((r) => r.socket_id === silent.id);
      assert.equal(unanswered.acked, false);
      assert.equal(unanswered.node_id, cluster.edges[2].nodeId);
      assert.equal(unanswered.args_json, '');
      // The silent socket did get the question (with an ack callback it never called).
      const [[question, callback]] = silent.argsOf('question');
      assert.equal(question, 'ready?');
      assert.equal(typeof callback, 'function');
    });

    it('returns as soon as every socket on every edge answered', async () => {
      const clients = await connectOnEveryEdge(pool, 'quick', ['quick-room']);
      clients.forEach((c, i) => c.socket.on('ping-all', (ack) => ack(i)));

      const started = Date.now();
      const res = await api.emitWithAck({ to: { rooms: ['quick-room'] }, event: 'ping-all', timeout_ms: 10_000 });
      const elapsed = Date.now() - started;

      assert.ok(elapsed < 5000, `took ${elapsed}ms although every socket answered`);
      assert.equal(res.complete, true);
      assert.equal(res.results.length, 3);
      clients.forEach((c, i) => {
        const result = res.results.find((r) => r.socket_id === c.id);
        assert.deepEqual(
          [result.acked, result.node_id, JSON.parse(result.args_json)],
          [true, cluster.edges[i].nodeId, [i]],
        );
      });
    });
  });

  describe('two control planes', () => {
    let apis;

    before(() => {
      apis = cluster.grpcAddrs.map((addr) => createRoomcastClient(addr));
    });

    after(() => apis?.forEach((a) => a.close()));

    it('emits through either control plane reach clients on every edge', async () => {
      assert.equal(apis.length, 2);
      const clients = await connectOnEveryEdge(pool, 'replica', ['replicated']);

      for (const [k, replica] of apis.entries()) {
        await replica.emit({ to: { rooms: ['replicated'] }, event: 'via', args_json: args(k) });
        await settle(replica, clients, { rooms: ['replicated'] });
      }
      for (const c of clients) assert.deepEqual(c.argsOf('via'), [[0], [1]], `socket ${c.id}`);
    });

    it('a join through one control plane holds for emits through the other', async () => {
      const clients = await connectOnEveryEdge(pool, 'cross');
      await apis[1].joinRooms({ target: { socket_ids: [clients[1].id, clients[2].id] }, rooms: ['cross-room'] });
      await apis[0].emit({ to: { rooms: ['cross-room'] }, event: 'cross', args_json: args('hi') });
      await settle(apis[0], clients, { rooms: ['cross-room'] });

      assert.equal(clients[0].count('cross'), 0);
      assert.deepEqual(clients[1].argsOf('cross'), [['hi']]);
      assert.deepEqual(clients[2].argsOf('cross'), [['hi']]);
    });

    it('an event consumed through one control plane is answered through the other', async () => {
      const consumer = await apis[1].consume({ events: ['ask-any'] }).ready();
      try {
        const client = await pool.connectAt(2, '/', asUser('asker'));
        const acked = client.emitWithAckArgs('ask-any', 'question');

        const event = await consumer.next((e) => e.socket_id === client.id);
        assert.equal(event.user_id, 'asker');
        assert.deepEqual(JSON.parse(event.args_json), ['question']);
        await apis[0].reply({
          reply_to: event.reply_to,
          socket_id: event.socket_id,
          namespace: event.namespace,
          ack_id: event.ack_id,
          args_json: args('answer'),
        });
        assert.deepEqual(await acked, ['answer']);
      } finally {
        consumer.close();
      }
    });
  });
});

describe('roomcast cluster over a 3-node NATS cluster', { timeout: 180_000 }, () => {
  const ROOMS = ['fo-a', 'fo-b', 'fo-c', 'fo-d'];
  let suite;
  let cluster;
  let api;
  let pool;

  before(async () => {
    suite = await startSuite({ natsNodes: 3, controls: 1 });
    ({ cluster, api, pool } = suite);
  });

  after(() => suite?.stop());

  /** The nats-server each edge's connection is on (index into cluster.nats.servers). */
  async function natsNodeOfEachEdge() {
    return Promise.all(
      cluster.edges.map(async (edge) => {
        const found = await waitFor(
          () => cluster.nats.connection(edgeConnectionName(edge)),
          10_000,
          `${edge.nodeId}'s connection on a nats-server`,
        );
        return cluster.nats.servers.indexOf(found.server);
      }),
    );
  }

  it('edges reconnect when their nats-server dies, resubscribe every room, and deliver later emits once', async () => {
    // Per edge: a socket in every room, and one in the edge's "own" room; rooms
    // are joined through JoinRooms, so only the edge's memory holds them.
    const inAll = await connectOnEveryEdge(pool, 'fo-all');
    const inOne = await connectOnEveryEdge(pool, 'fo-one');
    const clients = [...inAll, ...inOne];
    const reasons = clients.map(recordDisconnects);
    const ids = clients.map((c) => c.id);
    await api.joinRooms({ target: { socket_ids: inAll.map((c) => c.id) }, rooms: ROOMS });
    for (const i of EDGES) await api.joinRooms({ target: { socket_ids: [inOne[i].id] }, rooms: [ROOMS[i]] });
    // Each socket gets each of its rooms' emits once (order is kept per room,
    // not across rooms).
    const expected = (c) => (inAll.includes(c) ? ROOMS : [ROOMS[inOne.indexOf(c)]]);
    const roomsReceived = (c, event) => sorted(c.argsOf(event).map(([room]) => room));

    await emitToEachRoom('before', clients);
    for (const c of clients) {
      assert.deepEqual(roomsReceived(c, 'before'), expected(c), `socket ${c.id} before the failover`);
    }

    // Kill the nats-server holding the most edges.
    const nodes = await natsNodeOfEachEdge();
    const victim = nodes.reduce((best, n) => (count(nodes, n) > count(nodes, best) ? n : best));
    const moved = cluster.edges.filter((_, i) => nodes[i] === victim);
    assert.ok(moved.length >= 1);
    await cluster.nats.servers[victim].kill();

    // Every edge, those that lost their server included, is back on a live
    // nats-server with a subscription for each room it holds members of.
    for (const edge of cluster.edges) {
      await waitFor(
        async () => {
          const subs = await roomSubscriptions(cluster, edge);
          return subs && ROOMS.every((room) => subs.includes(roomSubject(room, { cluster: cluster.cluster })));
        },
        20_000,
        `${edge.nodeId} to be subscribed to every room on a live nats-server`,
        100,
      );
    }
    for (const p of [...cluster.edges, ...cluster.controls]) {
      await waitReady(p.adminUrl, 20_000, p.nodeId);
      assert.equal((await fetchMetrics(p.adminUrl)).get('roomcast_nats_connected'), 1, `${p.nodeId} nats gauge`);
    }

    // The clients never noticed.
    assert.deepEqual(reasons.flat(), [], 'no client was disconnected');
    assert.deepEqual(clients.map((c) => c.id), ids);

    // The first emits may still race the resubscription: retry until each socket
    // got one. From then on every emit arrives, once.
    let probe = 0;
    await waitFor(
      async () => {
        await api.emit({ to: { rooms: ROOMS }, event: 'probe', args_json: args(++probe) }).catch(() => {});
        return clients.every((c) => c.count('probe') > 0);
      },
      20_000,
      'an emit after the failover to reach every socket',
      200,
    );
    await emitToEachRoom('after', clients);
    for (const c of clients) {
      assert.deepEqual(roomsReceived(c, 'after'), expected(c), `socket ${c.id} after the failover`);
    }

    const sequence = Array.from({ length: 100 }, (_, i) => i);
    for (const i of sequence) await api.emit({ to: { rooms: ['fo-d'] }, event: 'seq', args_json: args(i) });
    await settle(api, clients, { rooms: ['fo-d'] });
    for (const c of inAll) assert.deepEqual(c.argsOf('seq').map(([i]) => i), sequence, `socket ${c.id} order`);
  });

  // Last: these take NATS away for good.
  it('with every nats-server gone, processes stay live but report not ready', async () => {
    await Promise.all(cluster.nats.servers.map((s) => s.kill()));
    for (const p of [...cluster.edges, ...cluster.controls]) {
      await waitFor(
        async () => (await readyzStatus(p.adminUrl)) === 503,
        20_000,
        `${p.nodeId} /readyz to answer 503`,
        100,
      );
      assert.equal((await fetchMetrics(p.adminUrl)).get('roomcast_nats_connected'), 0, `${p.nodeId} nats gauge`);
      assert.equal((await httpGet(`${p.adminUrl}/healthz`)).status, 200, `${p.nodeId} /healthz`);
    }
  });

  it('with every nats-server gone, edges and control planes still exit cleanly on SIGTERM', async () => {
    assert.equal(cluster.nats.running().length, 0);
    const processes = [...cluster.edges, ...cluster.controls];
    const exits = await Promise.allSettled(processes.map((p) => p.stop()));
    const unclean = exits
      .map((exit, i) => ({ exit, p: processes[i] }))
      .filter(({ exit }) => exit.status === 'rejected' || exit.value.code !== 0 || exit.value.signal !== null)
      .map(({ exit, p }) => {
        const logTail = p.stderrTail().split('\n').slice(-5).join('\n');
        return `${p.nodeId}: ${exit.reason?.message ?? JSON.stringify(exit.value)}\n${logTail}`;
      });
    assert.deepEqual(unclean, [], 'every process exits 0 after SIGTERM');
  });

  function count(list, value) {
    return list.filter((v) => v === value).length;
  }

  /** Emits `event` once to each room, with the room's name, and settles. */
  async function emitToEachRoom(event, clients) {
    for (const room of ROOMS) await api.emit({ to: { rooms: [room] }, event, args_json: args(room) });
    await settle(api, clients, { rooms: ROOMS });
  }
});
