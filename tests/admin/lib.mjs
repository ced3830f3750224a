// A 2-edge roomcast cluster with the Admin UI's namespace on, and helpers for
// the admin suites. Processes and waits come from tests/e2e/lib.

import bcrypt from 'bcryptjs';
import { io } from 'socket.io-client';
import { startCluster } from '../e2e/lib/cluster.mjs';
import { waitFor, withTimeout } from '../e2e/lib/wait.mjs';

export { waitFor, withTimeout };

export const ADMIN_NS = '/admin';
export const ADMIN_USER = 'admin';
export const ADMIN_PASSWORD = 'correct horse battery staple';

/** Two edges and a control plane, presence on, `/admin` served on every edge (plus `extraEdgeArgs`). */
export async function startAdminCluster(extraEdgeArgs = []) {
  const hash = bcrypt.hashSync(ADMIN_PASSWORD, 8);
  return startCluster({
    edges: 2,
    controls: 1,
    edgeArgs: [
      '--allow-anonymous',
      '--presence',
      '--admin-ui-namespace', ADMIN_NS,
      '--admin-ui-username', ADMIN_USER,
      '--admin-ui-password-hash', hash,
      ...extraEdgeArgs,
    ],
    controlArgs: ['--presence'],
  });
}

/** A socket.io-client of `url` + `nsp`, WebSocket only, not yet connected. */
export function client(url, nsp = '/', opts = {}) {
  return io(url + nsp, { transports: ['websocket'], reconnection: false, forceNew: true, ...opts });
}

/** Connects and resolves with the socket, or rejects with the connect_error. */
export function connect(socket, timeoutMs = 10_000) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(socket));
      socket.once('connect_error', (err) => reject(err));
    }),
    timeoutMs,
    'connect',
  );
}

/** An admin client that records what the server sends it. */
export function adminClient(url, auth) {
  const socket = client(url, ADMIN_NS, { auth });
  const seen = { config: [], stats: new Map(), sockets: new Map(), events: [], session: null };
  socket.on('session', (id) => (seen.session = id));
  socket.on('config', (c) => seen.config.push(c));
  socket.on('server_stats', (s) => seen.stats.set(s.serverId, s));
  socket.on('all_sockets', (all) => {
    for (const s of all) seen.sockets.set(s.id, s);
  });
  socket.on('socket_connected', (s) => {
    seen.sockets.set(s.id, s);
    seen.events.push(['socket_connected', s.id]);
  });
  socket.on('socket_disconnected', (nsp, id, reason) => {
    seen.sockets.delete(id);
    seen.events.push(['socket_disconnected', id, reason]);
  });
  socket.on('room_joined', (nsp, room, id) => seen.events.push(['room_joined', room, id]));
  socket.on('room_left', (nsp, room, id) => seen.events.push(['room_left', room, id]));
  return { socket, seen };
}
