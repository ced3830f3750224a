// A marketplace backend, ported from Socket.IO server code to roomcast.
//
// Every socket joins a room of its own user by role (`seller:<id>` or
// `buyer:<id>`, the role coming from the CONNECT `auth`). Buyers and sellers
// talk in chats (`chat:<id>`): joining is an acked event, messages go to the
// whole chat, typing indicators to the chat except the sender. An order
// placed by a buyer reaches every socket of its seller. When a user's last
// socket closes, roomcast itself broadcasts `user-status-change` (offline) to
// the rooms that user was in (`--presence-audience rooms`); the backend only
// follows it to keep "last seen" times.
//
// Run: ROOMCAST_ADDR=127.0.0.1:50051 ROOMCAST_API_KEY=... node app.js

import { pathToFileURL } from 'node:url';
import { Roomcast } from '@roomcast/server';

const chatRoom = (chatId) => `chat:${chatId}`;
const validId = (id) => typeof id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(id);

/** Starts the backend; resolves once it sees every connection. */
export async function startMarketplace({ address, apiKey, group = 'marketplace', log = () => {} }) {
  const rc = new Roomcast({ address, apiKey, group });
  const lastSeen = new Map();

  rc.on('error', (err) => log(`roomcast error: ${err.message}`));
  rc.on('reconnect', ({ stream }) => log(`stream ${stream} reconnected; events of the gap may be lost`));
  rc.on('user-status', ({ userId, status, lastSeen: at }) => {
    if (status === 'offline') lastSeen.set(userId, at);
  });

  rc.on('connection', async (socket) => {
    const role = socket.handshake.auth?.role === 'seller' ? 'seller' : 'buyer';
    socket.data.role = role;

    socket.on('chat:join', async (chatId, ack) => {
      if (!validId(chatId)) return ack?.({ ok: false, error: 'bad chat id' });
      await socket.join(chatRoom(chatId));
      ack?.({ ok: true });
    });

    socket.on('chat:message', async (chatId, text, ack) => {
      if (!validId(chatId) || typeof text !== 'string') return ack?.({ ok: false });
      await rc.to(chatRoom(chatId)).emit('chat:message', { chatId, from: socket.userId, text, at: Date.now() });
      ack?.({ ok: true });
    });

    // Typing goes to the others of the chat, not back to the sender.
    for (const [event, typing] of [['typing-start', true], ['typing-stop', false]]) {
      socket.on(event, async (chatId) => {
        if (!validId(chatId)) return;
        await rc.to(chatRoom(chatId)).except(socket.id).emit('typing', { chatId, userId: socket.userId, typing });
      });
    }

    socket.on('order:place', async ({ sellerId, item } = {}, ack) => {
      if (role !== 'buyer' || !validId(sellerId)) return ack?.({ ok: false });
      await rc.to(`seller:${sellerId}`).emit('order:new', { buyerId: socket.userId, item });
      ack?.({ ok: true });
    });

    socket.on('disconnect', (reason) => log(`socket ${socket.id} of ${socket.userId} left: ${reason}`));

    // Listeners first (as with Socket.IO: events may come at once), then the room.
    if (socket.userId) await socket.join(`${role}:${socket.userId}`);
    socket.emit('marketplace:ready', { role });
  });

  await rc.ready();
  return { rc, lastSeen, close: () => rc.close() };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const address = process.env.ROOMCAST_ADDR ?? '127.0.0.1:50051';
  const app = await startMarketplace({ address, apiKey: process.env.ROOMCAST_API_KEY, log: console.log });
  console.log(`marketplace backend on roomcast ${address}`);
  process.on('SIGINT', () => {
    app.close();
    process.exit(0);
  });
}
