// Lame-duck drain of an edge under a few hundred clients, behind a
// readiness-aware load balancer: at SIGTERM the edge is not ready at once, keeps
// its clients for the delay, closes them spread over the window and exits in
// time; the clients reconnect to the other edge, and presence never reports
// them offline (the grace period covers the move).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { io } from 'socket.io-client';
import { startBalancer } from './lib/balancer.mjs';
import {
  claims,
  createRoomcastClient,
  readyzStatus,
  roomcastPackage,
  signHs256,
  startCluster,
  waitConnected,
  waitFor,
} from './lib/index.mjs';
import grpc from '@grpc/grpc-js';

const SECRET = 'e2e-drain-secret-with-enough-bytes-0123456789';
const CLIENTS = 200;
const DELAY_MS = 1000;
const WINDOW_MS = 3000;
const GRACE_MS = 6000;

describe('edge drain', { timeout: 120_000 }, () => {
  let cluster;
  let balancer;
  let api;
  const sockets = [];

  before(async () => {
    const presence = ['--presence-grace-ms', String(GRACE_MS)];
    cluster = await startCluster({
      edges: 2,
      controls: 1,
      edgeArgs: [
        '--jwt-secret', SECRET,
        '--drain-delay-ms', String(DELAY_MS),
        '--drain-window-ms', String(WINDOW_MS),
        ...presence,
      ],
      controlArgs: presence,
    });
    balancer = await startBalancer(cluster.edges);
    api = createRoomcastClient(cluster.grpcAddr, { deadlineMs: 10_000 });
  });

  after(async () => {
    for (const s of sockets) s.close();
    api?.close();
    await balancer?.stop();
    await cluster?.stop();
  });

  it('spreads the closes, exits in time, and the clients move without a presence flap', async () => {
    for (let i = 0; i < CLIENTS; i++) {
      sockets.push(
        io(balancer.url, {
          transports: ['websocket'],
          forceNew: true,
          auth: { token: signHs256(claims(`drain-user-${i}`), SECRET) },
          reconnectionDelay: 100,
          reconnectionDelayMax: 500,
        }),
      );
    }
    await waitFor(() => sockets.every((s) => s.connected), 30_000, `${CLIENTS} clients to connect`);
    // Presence records a connect after the client sees it: wait for all of
    // them before watching, or the last ones show up as transitions.
    const userIds = sockets.map((_, i) => `drain-user-${i}`);
    await waitFor(
      async () => (await api.getPresence({ user_ids: userIds })).users.every((u) => u.online),
      10_000,
      'presence to have every user online',
      50,
    );
    const [leaving, staying] = cluster.edges;
    const onLeaving = async () =>
      (await api.fetchSockets({ target: {} })).sockets.filter((s) => s.node_id === leaving.nodeId);
    const moving = new Set((await onLeaving()).map((s) => s.id));
    assert.ok(moving.size > CLIENTS / 4, `the balancer spread the clients (${moving.size} on the draining edge)`);

    // Every online/offline from now on would be a flap.
    const { Roomcast } = roomcastPackage();
    const watcher = new Roomcast(cluster.grpcAddr, grpc.credentials.createInsecure());
    const stream = watcher.WatchPresence({});
    const transitions = [];
    stream.on('data', (ev) => {
      if (ev.kind === 'online' || ev.kind === 'offline') transitions.push(ev);
    });
    stream.on('error', () => {});
    await new Promise((resolve) => stream.once('metadata', resolve));

    const closedAt = [];
    for (const s of sockets) {
      if (moving.has(s.id)) s.once('disconnect', () => closedAt.push(Date.now()));
    }
    const t0 = Date.now();
    const exited = new Promise((resolve) => leaving.proc.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
    leaving.proc.kill('SIGTERM');

    await waitFor(async () => (await readyzStatus(leaving.adminUrl)) === 503, 500, 'the draining edge to report not ready at once', 20);
    const exit = await exited;
    assert.deepEqual([exit.code, exit.signal], [0, null], 'a clean exit');
    assert.ok(exit.at - t0 < DELAY_MS + WINDOW_MS + 3000, `exited ${exit.at - t0} ms after SIGTERM`);

    assert.equal(closedAt.length, moving.size, 'every client of the draining edge was disconnected');
    const first = Math.min(...closedAt) - t0;
    const last = Math.max(...closedAt) - t0;
    assert.ok(first >= DELAY_MS * 0.8, `no close before the delay (first at ${first} ms)`);
    assert.ok(last - first >= WINDOW_MS * 0.6, `closes spread over the window (${first}..${last} ms)`);

    await waitFor(() => sockets.every((s) => s.connected), 30_000, 'every client to reconnect');
    const after = (await api.fetchSockets({ target: {} })).sockets;
    assert.equal(after.length, CLIENTS);
    assert.ok(after.every((s) => s.node_id === staying.nodeId), 'everyone is on the other edge');

    // Every drained user's grace timer started when its socket closed. A
    // sentinel user who connects and leaves now goes offline only after all of
    // those timers have fired: until then, nobody else may have gone offline.
    const sentinel = io(balancer.url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      auth: { token: signHs256(claims('drain-sentinel'), SECRET) },
    });
    await waitConnected(sentinel);
    sentinel.close();
    await waitFor(
      () => transitions.some((ev) => ev.user_id === 'drain-sentinel' && ev.kind === 'offline'),
      GRACE_MS + 10_000,
      'the sentinel to go offline',
    );
    assert.deepEqual(
      transitions.filter((ev) => ev.user_id !== 'drain-sentinel'),
      [],
      'no presence flap',
    );
    const { users } = await api.getPresence({ user_ids: userIds });
    assert.ok(users.every((u) => u.online), 'every user is online');
    stream.cancel();
    watcher.close();
  });
});
