// Long-polling without sticky sessions (ADR 0020): three edges behind a
// balancer that sends every request of a session to another edge than its
// previous one. Checks that the requests really are forwarded to the edge
// holding the session (and the upgrade relayed), that the protocol's rules hold
// across edges, and that a session whose edge died ends at once.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { startRequestBalancer } from './lib/balancer.mjs';
import {
  claims,
  createRoomcastClient,
  fetchMetrics,
  httpGet,
  signHs256,
  SocketPool,
  startCluster,
  waitConnected,
  waitFor,
} from './lib/index.mjs';

const SECRET = 'e2e-forwarding-hs256-secret-with-enough-bytes';
const API_KEY = 'e2e-forwarding-key';
const MAX_PAYLOAD = 4096;
const PING_INTERVAL_MS = 1000;
const PING_TIMEOUT_MS = 1000;

const token = (user) => signHs256(claims(user), SECRET);
const args = (...values) => JSON.stringify(values);

/** The sum of a counter's series whose labels include every `labels` pair. */
function sumOf(samples, name, labels = {}) {
  let total = 0;
  for (const [series, value] of samples) {
    if (!series.startsWith(`${name}{`) && series !== name) continue;
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) total += value;
  }
  return total;
}

async function clusterSum(cluster, name, labels) {
  const all = await Promise.all(cluster.edges.filter((e) => e.alive).map((e) => fetchMetrics(e.adminUrl)));
  return all.reduce((n, samples) => n + sumOf(samples, name, labels), 0);
}

/** A raw Engine.IO request through `url` (no socket.io-client). */
async function eio(url, { method = 'GET', sid, body } = {}) {
  const q = new URLSearchParams({ EIO: '4', transport: 'polling', t: String(Math.random()) });
  if (sid) q.set('sid', sid);
  const res = await fetch(`${url}/socket.io/?${q}`, { method, body });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

describe('long-polling across edges without affinity', () => {
  let cluster;
  let balancer;
  let api;
  let pool;
  before(async () => {
    cluster = await startCluster({
      edges: 3,
      edgeArgs: [
        '--jwt-secret', SECRET,
        '--max-payload', String(MAX_PAYLOAD),
        '--ping-interval-ms', String(PING_INTERVAL_MS),
        '--ping-timeout-ms', String(PING_TIMEOUT_MS),
      ],
      controlArgs: ['--api-key', API_KEY],
    });
    balancer = await startRequestBalancer(cluster.httpUrls);
    api = createRoomcastClient(cluster.grpcAddr, { apiKey: API_KEY });
    pool = new SocketPool(balancer.urls);
  });
  afterEach(() => pool.closeAll());
  after(async () => {
    pool?.closeAll();
    api?.close();
    await balancer?.stop();
    await cluster?.stop();
  });

  it('a polling client is served by every edge: its requests are forwarded to the edge holding it', async () => {
    const before = await clusterSum(cluster, 'roomcast_edge_forwarded_requests_total', { outcome: 'answered' });
    const client = await pool.connectAt(0, '/', { transports: ['polling'], auth: { token: token('fwd-polling') } });
    for (let i = 0; i < 20; i++) {
      await api.emit({ to: { socket_ids: [client.id] }, event: 'n', args_json: args(i) });
    }
    await waitFor(() => client.count('n') === 20, 5000, '20 events');
    assert.deepEqual(client.argsOf('n').map(([n]) => n), [...Array(20).keys()], 'in order, once');
    client.socket.emit('ping-me');
    const after = await clusterSum(cluster, 'roomcast_edge_forwarded_requests_total', { outcome: 'answered' });
    assert.ok(after - before >= 2, `requests were forwarded (${after - before})`);
    const { sockets } = await api.fetchSockets({ target: { socket_ids: [client.id] } });
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0].node_id, 'edge-1', 'the session stays on the edge that opened it');
    assert.equal(sockets[0].transport, 'polling');
    // Heartbeats: pings come in forwarded GETs, pongs go in forwarded POSTs.
    await new Promise((r) => setTimeout(r, 3 * PING_INTERVAL_MS + PING_TIMEOUT_MS));
    assert.ok(client.socket.connected, 'still connected after several ping intervals');
  });

  it('an upgrade landing on another edge is relayed: the client is on a WebSocket, the session stays where it is', async () => {
    const client = pool.openAt(1, '/', { transports: ['polling', 'websocket'], auth: { token: token('fwd-upgrade') } });
    const upgraded = new Promise((resolve) => client.socket.io.engine.once('upgrade', (t) => resolve(t.name)));
    await waitConnected(client.socket);
    assert.equal(await upgraded, 'websocket');
    await waitFor(async () => (await clusterSum(cluster, 'roomcast_edge_relayed_websockets')) >= 1, 5000, 'a relayed websocket');
    await waitFor(
      async () => (await api.fetchSockets({ target: { socket_ids: [client.id] } })).sockets[0]?.transport === 'websocket',
      5000,
      'FetchSockets to report the websocket',
    );
    const { sockets } = await api.fetchSockets({ target: { socket_ids: [client.id] } });
    assert.equal(sockets[0].node_id, 'edge-2');

    // A second WebSocket for the session, on its own edge, is refused as for
    // any upgraded session: accepted, then closed with 1008.
    const sid = client.socket.io.engine.id;
    const second = new WebSocket(`${cluster.edges[1].httpUrl.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket&sid=${sid}`);
    const closed = await new Promise((resolve) => {
      second.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
      second.on('error', () => {});
    });
    assert.deepEqual(closed, { code: 1008, reason: 'already_upgraded' });

    // Both ways: an emit to it, and a client event that reaches a backend.
    await api.emit({ to: { socket_ids: [client.id] }, event: 'hello', args_json: args('relayed') });
    assert.deepEqual(await client.nextEvent('hello'), ['relayed']);
    const consumer = await api.consume({ events: ['from-relay'] }).ready();
    try {
      client.socket.emit('from-relay', 'up', Buffer.from([1, 2, 3]));
      const event = await consumer.next((e) => e.socket_id === client.id);
      assert.equal(event.event, 'from-relay');
    } finally {
      consumer.close();
    }
  });

  it('a client whose WebSocket is relayed stays connected across ping intervals, and a server disconnect reaches it', async () => {
    const client = pool.openAt(2, '/', { transports: ['polling', 'websocket'], auth: { token: token('fwd-ping') } });
    const upgraded = new Promise((resolve) => client.socket.io.engine.once('upgrade', resolve));
    await waitConnected(client.socket);
    await upgraded;
    await new Promise((r) => setTimeout(r, 3 * PING_INTERVAL_MS + PING_TIMEOUT_MS));
    assert.ok(client.socket.connected, 'pongs reach the owner through the relay');
    const reasons = [];
    client.socket.on('disconnect', (r) => reasons.push(r));
    await api.disconnectSockets({ target: { socket_ids: [client.id] }, close: true });
    await waitFor(() => reasons.length > 0, 5000, 'the disconnect');
    assert.deepEqual(reasons, ['io server disconnect']);
  });

  it('a POST over max payload sent to another edge gets 413 there, and the session ends on its edge', async () => {
    const open = await eio(cluster.edges[0].httpUrl);
    assert.equal(open.status, 200);
    const sid = JSON.parse(open.body.slice(1)).sid;
    const big = await eio(cluster.edges[1].httpUrl, { method: 'POST', sid, body: `4${'x'.repeat(MAX_PAYLOAD)}` });
    assert.equal(big.status, 413);
    await waitFor(async () => (await eio(cluster.edges[0].httpUrl, { sid })).status === 400, 5000, 'the session to be gone');
  });

  it('two GETs of one session in flight on two edges close the session, as on one edge', async () => {
    const open = await eio(cluster.edges[0].httpUrl);
    const sid = JSON.parse(open.body.slice(1)).sid;
    const first = eio(cluster.edges[1].httpUrl, { sid });
    await new Promise((r) => setTimeout(r, 100));
    const second = await eio(cluster.edges[2].httpUrl, { sid });
    assert.equal(second.status, 400);
    const firstDone = await first;
    assert.equal(firstDone.status, 200);
    assert.equal((await eio(cluster.edges[0].httpUrl, { sid })).status, 400, 'the session is closed');
  });

  it('an unknown sid of a tag no edge holds is "Session ID unknown" at once', async () => {
    const res = await eio(cluster.edges[0].httpUrl, { sid: 'zzzzzAAAAAAAAAAAAAAA' });
    assert.equal(res.status, 400);
    assert.deepEqual(JSON.parse(res.body), { code: 1, message: 'Session ID unknown' });
  });

  it('when the edge holding a session dies, a request on another edge ends it at once and the client reconnects elsewhere', async () => {
    const client = pool.openAt(0, '/', {
      transports: ['polling'],
      auth: { token: token('fwd-dead-owner') },
      reconnection: true,
      reconnectionDelay: 50,
      reconnectionDelayMax: 50,
    });
    await waitConnected(client.socket);
    const firstId = client.id;
    const { sockets } = await api.fetchSockets({ target: { socket_ids: [firstId] } });
    const owner = cluster.edges.find((e) => e.nodeId === sockets[0].node_id);
    const reasons = [];
    client.socket.on('disconnect', (r) => reasons.push(r));
    await owner.kill();
    // A dead owner answers like a closed session: no waiting for the ping timeout.
    await waitFor(() => reasons.length > 0, PING_INTERVAL_MS + PING_TIMEOUT_MS, 'the client to learn its session is gone');
    await waitFor(() => client.socket.connected && client.id !== firstId, 10_000, 'a reconnect on a live edge');
    await api.emit({ to: { socket_ids: [client.id] }, event: 'back', args_json: args(1) });
    assert.deepEqual(await client.nextEvent('back'), [1]);
    assert.ok(
      (await clusterSum(cluster, 'roomcast_edge_forwarded_requests_total', { outcome: 'owner_gone' })) >= 1,
      'a forwarded request found nobody holding the tag',
    );
  });
});

describe('a relayed WebSocket whose client stops reading', () => {
  const QUEUE_BYTES = 256 * 1024;
  let cluster;
  let api;
  before(async () => {
    cluster = await startCluster({
      edges: 2,
      edgeArgs: ['--allow-anonymous', '--max-payload', String(128 * 1024), '--outbound-queue-bytes', String(QUEUE_BYTES)],
      controlArgs: ['--api-key', API_KEY],
    });
    api = createRoomcastClient(cluster.grpcAddr, { apiKey: API_KEY });
  });
  after(async () => {
    api?.close();
    await cluster?.stop();
  });

  it('is a slow consumer on the edge holding its session, as a WebSocket of its own would be', async () => {
    const [owner, relay] = cluster.edges;
    const open = await eio(owner.httpUrl);
    const sid = JSON.parse(open.body.slice(1)).sid;
    assert.equal((await eio(owner.httpUrl, { method: 'POST', sid, body: '40' })).status, 200);
    const connected = await eio(owner.httpUrl, { sid });
    const socketId = JSON.parse(connected.body.slice(2)).sid;

    // The upgrade, by hand, on the other edge.
    const ws = new WebSocket(`${relay.httpUrl.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket&sid=${sid}`);
    const frames = [];
    ws.on('message', (data) => frames.push(data.toString()));
    ws.on('error', () => {});
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.send('2probe');
    await waitFor(() => frames.includes('3probe'), 5000, '3probe from the relay');
    ws.send('5');
    await waitFor(
      async () => (await api.fetchSockets({ target: { socket_ids: [socketId] } })).sockets[0]?.transport === 'websocket',
      5000,
      'the upgrade to be done',
    );
    const slow = async () =>
      (await fetchMetrics(owner.adminUrl)).get('roomcast_edge_disconnects_total{reason="slow_consumer"}') ?? 0;
    const before = await slow();

    // The client reads nothing more; the backend keeps emitting.
    ws._socket.pause();
    const chunk = 'x'.repeat(64 * 1024);
    let closed = false;
    for (let i = 0; i < 2000 && !closed; i++) {
      await api.emit({ to: { socket_ids: [socketId] }, event: 'big', args_json: args(chunk) });
      if (i % 50 === 49) closed = (await slow()) > before;
    }
    await waitFor(async () => (await slow()) > before, 10_000, 'a slow_consumer close on the owner');
    ws.terminate();
  });
});
