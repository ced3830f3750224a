// The marketplace backend against a real roomcast (standalone, or a cluster
// with ROOMCAST_E2E_TARGET=cluster), with socket.io-client as buyers and sellers.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SocketPool, claims, signHs256, startTarget, waitFor } from '../../../tests/e2e/lib/index.mjs';
import { startMarketplace } from '../app.js';

const SECRET = 'marketplace-example-hs256-secret-with-enough-bytes';
const API_KEY = 'marketplace-example-api-key';
const STATUS = 'user-status-change';

describe('marketplace example', () => {
  let server;
  let pool;
  let app;

  before(async () => {
    server = await startTarget([
      '--jwt-secret', SECRET,
      '--api-key', API_KEY,
      '--presence-audience', 'rooms',
      '--presence-grace-ms', '0',
    ]);
    pool = new SocketPool(server.httpUrls);
    app = await startMarketplace({ address: server.grpcAddr, apiKey: API_KEY });
  });
  after(async () => {
    pool?.closeAll();
    app?.close();
    await server?.stop();
  });

  /** A user's socket, connected and set up by the backend (it said marketplace:ready). */
  const user = async (id, role) => {
    const client = await pool.connect('/', { auth: { token: signHs256(claims(id), SECRET), role } });
    await client.nextEvent('marketplace:ready');
    return client;
  };

  it('relays chat and typing (except the sender), routes orders to the seller, and broadcasts offline when the last socket closes', async () => {
    const seller = await user(`seller-${process.pid}`, 'seller');
    const sellerTab2 = await user(`seller-${process.pid}`, 'seller');
    const buyerId = `buyer-${process.pid}`;
    const buyer = await user(buyerId, 'buyer');
    const buyerTab2 = await user(buyerId, 'buyer');
    const chat = `c${process.pid}`;
    for (const c of [seller, buyer, buyerTab2]) {
      const [res] = await c.emitWithAckArgs('chat:join', chat);
      assert.deepEqual(res, { ok: true });
    }
    assert.deepEqual((await buyer.emitWithAckArgs('chat:join', '../bad'))[0].ok, false);

    buyer.socket.emit('typing-start', chat);
    const [typing] = await seller.nextEvent('typing', ([t]) => t.typing === true);
    assert.deepEqual(typing, { chatId: chat, userId: buyerId, typing: true });
    await buyerTab2.nextEvent('typing', ([t]) => t.typing === true);
    await buyer.emitWithAckArgs('chat:message', chat, 'is it still available?');
    for (const c of [seller, buyer, buyerTab2]) {
      await c.nextEvent('chat:message', ([m]) => m.text === 'is it still available?' && m.from === buyerId);
    }
    // The chat message went after the typing through the same room: the sender got no typing of its own.
    assert.equal(buyer.count('typing'), 0);

    const [order] = await buyer.emitWithAckArgs('order:place', { sellerId: `seller-${process.pid}`, item: 'lamp' });
    assert.deepEqual(order, { ok: true });
    for (const c of [seller, sellerTab2]) {
      await c.nextEvent('order:new', ([o]) => o.item === 'lamp' && o.buyerId === buyerId);
    }

    // One of the buyer's two sockets closes: still online.
    buyerTab2.socket.close();
    await waitFor(async () => (await app.rc.presence([buyerId]))[0].sockets === 1, 5000, 'the buyer to have one socket');
    await buyer.emitWithAckArgs('chat:message', chat, 'still here');
    await seller.nextEvent('chat:message', ([m]) => m.text === 'still here');
    assert.equal(seller.argsOf(STATUS).filter(([s]) => s.userId === buyerId && s.status === 'offline').length, 0);
    // The last one closes: the chat hears that the buyer is offline.
    buyer.socket.close();
    const [status] = await seller.nextEvent(STATUS, ([s]) => s.userId === buyerId && s.status === 'offline');
    assert.ok(status.lastSeen > 0);
    await waitFor(() => app.lastSeen.get(buyerId), 5000, 'the backend to see the buyer offline');
  });
});
