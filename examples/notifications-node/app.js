// A notification backend on roomcast, with a small HTTP API:
//
//   POST /notify  {"userId": "alice", "title": "...", "body": "..."}
//        → 201 {"msgId": "...", "messageId": "..."}
//   GET  /notifications/<msgId>
//        → 200 {"msgId", "userId", "status": "pending"|"acked"|"expired"|"purged", ...}
//
// Each notification carries the application's own `msgId` and is sent
// at-least-once (`emitReliable`): roomcast resends it until a socket of the
// user acks, queues it (in order) while the user has no socket, and delivers
// it when one connects; the TTL bounds how long it may wait. roomcast's
// message id (what GetDelivery takes) is kept next to the msgId.
//
// Run: ROOMCAST_ADDR=127.0.0.1:50051 ROOMCAST_API_KEY=... PORT=8080 node app.js

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { Roomcast, RoomcastError } from '@roomcast/server';

const MAX_BODY = 16 * 1024;
const validUser = (id) => typeof id === 'string' && id.length > 0 && id.length <= 256;

function readJson(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'));
      } catch {
        reject(Object.assign(new Error('body is not JSON'), { status: 400 }));
      }
    });
    req.on('error', reject);
  });
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/**
 * Starts the backend and its HTTP API on `host:port` (port 0: any). Resolves to
 * `{ url, rc, notify(userId, notification), status(msgId), close() }`.
 */
export async function startNotifications({ address, apiKey, ttlMs = 24 * 3600 * 1000, host = '127.0.0.1', port = 0 }) {
  const rc = new Roomcast({ address, apiKey });
  const sent = new Map(); // msgId → { userId, messageId }

  async function notify(userId, { title, body }) {
    const msgId = randomUUID();
    const messageId = await rc.toUser(userId).emitReliable('notification', { msgId, title, body, sentAt: Date.now() }, { ttlMs });
    sent.set(msgId, { userId, messageId });
    return { msgId, messageId };
  }

  async function status(msgId) {
    const entry = sent.get(msgId);
    if (!entry) return null;
    const delivery = await rc.delivery(entry.messageId);
    return { msgId, userId: entry.userId, messageId: entry.messageId, status: delivery.status, recipients: delivery.recipients };
  }

  const server = http.createServer(async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === '/notify') {
        const { userId, title, body } = await readJson(req);
        if (!validUser(userId) || typeof title !== 'string') return send(res, 400, { error: 'userId and title are required' });
        return send(res, 201, await notify(userId, { title, body }));
      }
      const m = req.method === 'GET' && /^\/notifications\/([0-9a-f-]{36})$/.exec(req.url ?? '');
      if (m) {
        const s = await status(m[1]);
        return s ? send(res, 200, s) : send(res, 404, { error: 'unknown msgId' });
      }
      send(res, 404, { error: 'not found' });
    } catch (err) {
      const code = err.status ?? (err instanceof RoomcastError ? 502 : 500);
      send(res, code, { error: err.message });
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const { port: bound } = server.address();
  return {
    url: `http://${host}:${bound}`,
    rc,
    notify,
    status,
    close: () => {
      server.close();
      rc.close();
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const address = process.env.ROOMCAST_ADDR ?? '127.0.0.1:50051';
  const app = await startNotifications({
    address,
    apiKey: process.env.ROOMCAST_API_KEY,
    port: Number(process.env.PORT ?? 8080),
  });
  console.log(`notifications API on ${app.url}, roomcast ${address}`);
  process.on('SIGINT', () => {
    app.close();
    process.exit(0);
  });
}
