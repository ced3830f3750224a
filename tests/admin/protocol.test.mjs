// The Admin UI's protocol against a 2-edge cluster, with socket.io-client:
// credentials required, stats rows from both edges, the cluster's sockets and
// their live changes, and the UI's requests (emit, join, leave, _disconnect).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_NS, ADMIN_PASSWORD, ADMIN_USER, adminClient, client, connect, startAdminCluster, waitFor,
} from './lib.mjs';
import { fetchMetrics, httpGet, startStandalone } from '../e2e/lib/process.mjs';

let cluster;
const open = [];
const track = (s) => (open.push(s), s);

before(async () => {
  cluster = await startAdminCluster();
});

after(async () => {
  for (const s of open) s.disconnect();
  await cluster?.stop();
});

test('the admin namespace refuses a client without credentials or with wrong ones', async () => {
  const [url] = cluster.httpUrls;
  const none = track(client(url, ADMIN_NS));
  await assert.rejects(connect(none), /invalid credentials/);
  const wrong = track(client(url, ADMIN_NS, { auth: { username: ADMIN_USER, password: 'nope' } }));
  await assert.rejects(connect(wrong), /invalid credentials/);
  const otherUser = track(client(url, ADMIN_NS, { auth: { username: 'root', password: ADMIN_PASSWORD } }));
  await assert.rejects(connect(otherUser), /invalid credentials/);
  const badSession = track(client(url, ADMIN_NS, { auth: { sessionId: 'made-up' } }));
  await assert.rejects(connect(badSession), /invalid credentials/);
  const metrics = await fetchMetrics(cluster.edges[0].adminUrl);
  assert.equal(metrics.get('roomcast_edge_connects_refused_total{cause="admin_credentials"}'), 4);
});

test('the admin namespace is refused when the admin UI is off', async () => {
  const standalone = await startStandalone(['--allow-anonymous']);
  try {
    const s = track(client(standalone.httpUrl, ADMIN_NS, { auth: { username: ADMIN_USER, password: ADMIN_PASSWORD } }));
    await assert.rejects(connect(s), /Invalid namespace/);
    // Nor is the UI's build served.
    assert.equal((await httpGet(`${standalone.adminUrl}/admin-ui/`)).status, 404);
  } finally {
    await standalone.stop();
  }
});

test('an admin sees both edges, the sockets of the cluster and their changes, and acts on them', async () => {
  const [url1, url2] = cluster.httpUrls;
  const before1 = track(await connect(client(url1)));
  const admin = adminClient(url2, { username: ADMIN_USER, password: ADMIN_PASSWORD });
  track(admin.socket);
  await connect(admin.socket);
  const { seen } = admin;
  await waitFor(() => seen.config.length === 1, 5000, 'config');
  assert.ok(seen.config[0].supportedFeatures.includes('JOIN'));
  assert.equal(typeof seen.session, 'string', 'a session id for reconnects');
  // A socket connected before the admin: in all_sockets (from the directory).
  await waitFor(() => seen.sockets.has(before1.id), 5000, 'the earlier socket in all_sockets');
  // One stats row per edge, named by node id.
  await waitFor(() => seen.stats.has('edge-1') && seen.stats.has('edge-2'), 10_000, 'stats of both edges');
  await waitFor(() => seen.stats.get('edge-1').clientsCount >= 1, 10_000, 'edge-1 counts its client');
  assert.equal(seen.stats.get('edge-1').namespaces[0].name, '/');

  // Live: connects on either edge arrive.
  const a = track(await connect(client(url1)));
  const b = track(await connect(client(url2)));
  await waitFor(() => seen.sockets.has(a.id) && seen.sockets.has(b.id), 5000, 'socket_connected of both');
  assert.equal(seen.sockets.get(a.id).nsp, '/');
  assert.ok(seen.sockets.get(a.id).rooms.includes(a.id));

  // join: the socket on edge-1 joins a room; an emit to the room reaches it only.
  admin.socket.emit('join', '/', 'lobby', a.id);
  await waitFor(() => seen.events.some((e) => e[0] === 'room_joined' && e[1] === 'lobby' && e[2] === a.id), 5000, 'room_joined');
  const got = [];
  a.on('news', (x) => got.push(['a', x]));
  b.on('news', (x) => got.push(['b', x]));
  admin.socket.emit('emit', '/', 'lobby', 'news', { n: 1 });
  await waitFor(() => got.length >= 1, 5000, 'the emit to the room');
  admin.socket.emit('emit', '/', b.id, 'news', { n: 2 });
  await waitFor(() => got.length >= 2, 5000, 'the emit to a socket id');
  assert.deepEqual(got, [['a', { n: 1 }], ['b', { n: 2 }]]);

  admin.socket.emit('leave', '/', 'lobby', a.id);
  await waitFor(() => seen.events.some((e) => e[0] === 'room_left' && e[1] === 'lobby' && e[2] === a.id), 5000, 'room_left');

  // _disconnect: the socket on the other edge is disconnected by the server.
  const reason = new Promise((resolve) => b.once('disconnect', resolve));
  admin.socket.emit('_disconnect', '/', false, b.id);
  assert.equal(await reason, 'io server disconnect');
  await waitFor(() => !seen.sockets.has(b.id), 5000, 'socket_disconnected');

  // A client that leaves: gone from the list (its id read first: the client forgets it).
  const aId = a.id;
  a.disconnect();
  await waitFor(() => seen.events.some((e) => e[0] === 'socket_disconnected' && e[1] === aId), 5000, 'a leaves');
  assert.ok(!seen.sockets.has(aId));

  // The session id lets the UI reconnect without the password, on the edge that gave it.
  const again = track(client(url2, ADMIN_NS, { auth: { sessionId: seen.session } }));
  await connect(again);
});

test('an admin request for an unknown namespace or with junk arguments is ignored', async () => {
  const [url1] = cluster.httpUrls;
  const admin = adminClient(url1, { username: ADMIN_USER, password: ADMIN_PASSWORD });
  track(admin.socket);
  await connect(admin.socket);
  const s = track(await connect(client(url1)));
  admin.socket.emit('_disconnect', '/nowhere', false);
  admin.socket.emit('join', 42, null, {});
  admin.socket.emit('emit');
  admin.socket.emit('whatever', '/', 'x');
  // Still connected, both of them: a round trip through the admin namespace proves it.
  await waitFor(() => admin.seen.sockets.has(s.id), 5000, 'the socket still listed');
  assert.ok(s.connected);
  assert.ok(admin.socket.connected);
});
