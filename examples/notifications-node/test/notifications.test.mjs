// The notification backend against a real roomcast (standalone, or a cluster
// with ROOMCAST_E2E_TARGET=cluster): a user offline gets three notifications
// queued, connects with socket.io-client, receives them in order, acks, and
// the backend sees them acked.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SocketPool, claims, signHs256, startTarget, waitFor } from '../../../tests/e2e/lib/index.mjs';
import { startNotifications } from '../app.js';

const SECRET = 'notifications-example-hs256-secret-with-enough-bytes';
const API_KEY = 'notifications-example-api-key';

async function http(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() };
}

describe('notifications example', () => {
  let server;
  let pool;
  let app;

  before(async () => {
    server = await startTarget(['--jwt-secret', SECRET, '--api-key', API_KEY]);
    pool = new SocketPool(server.httpUrls);
    app = await startNotifications({ address: server.grpcAddr, apiKey: API_KEY, ttlMs: 60_000 });
  });
  after(async () => {
    pool?.closeAll();
    app?.close();
    await server?.stop();
  });

  it('queues notifications for an offline user, delivers them in order at connect, and reports them acked', async () => {
    const userId = `reader-${process.pid}`;
    const posted = [];
    for (const title of ['first', 'second', 'third']) {
      const res = await http('POST', `${app.url}/notify`, { userId, title, body: `${title} body` });
      assert.equal(res.status, 201);
      posted.push(res.body);
    }
    for (const { msgId } of posted) {
      assert.equal((await http('GET', `${app.url}/notifications/${msgId}`)).body.status, 'pending');
    }

    // The client: drops duplicates by roomcast's messageId, acks every copy.
    const received = [];
    const seen = new Set();
    const client = pool.open('/', { auth: { token: signHs256(claims(userId), SECRET) } });
    client.socket.on('notification', (notification, { messageId }, ack) => {
      if (!seen.has(messageId)) {
        seen.add(messageId);
        received.push(notification);
      }
      ack();
    });
    await waitFor(() => received.length === 3, 10_000, 'three notifications');
    assert.deepEqual(received.map((n) => n.title), ['first', 'second', 'third']);
    assert.deepEqual(received.map((n) => n.msgId), posted.map((p) => p.msgId));

    for (const { msgId, messageId } of posted) {
      await waitFor(
        async () => (await http('GET', `${app.url}/notifications/${msgId}`)).body.status === 'acked',
        10_000,
        `notification ${msgId} to be acked`,
      );
      assert.equal((await app.rc.delivery(messageId)).recipients[0].status, 'acked');
    }
    assert.deepEqual(await app.rc.inbox(userId), []);
  });

  it('refuses a bad request', async () => {
    assert.equal((await http('POST', `${app.url}/notify`, { title: 'no user' })).status, 400);
    assert.equal((await http('GET', `${app.url}/notifications/00000000-0000-0000-0000-000000000000`)).status, 404);
  });
});
