// Node socket.io peer for the load comparison (benches/run).
//
// Sockets join the rooms listed in the CONNECT auth object (`{rooms: [...]}`) or
// in the `rooms` query parameter (comma separated). `POST /emit` with
// `{"room": "...", "event": "...", "data": ...}` broadcasts to a room. With
// REDIS_URL set, the @socket.io/redis-adapter spreads emits over every process
// on that Redis. Prints `peer listening http=HOST:PORT` when ready.
import http from "node:http";
import { Server } from "socket.io";

const host = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 0);

const server = http.createServer();
const io = new Server(server, { serveClient: false, transports: ["websocket", "polling"] });

if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

function roomsOf(socket) {
  const fromAuth = socket.handshake.auth?.rooms;
  if (Array.isArray(fromAuth)) return fromAuth.map(String);
  const q = socket.handshake.query?.rooms;
  return typeof q === "string" && q.length > 0 ? q.split(",") : [];
}

io.on("connection", (socket) => {
  const rooms = roomsOf(socket);
  if (rooms.length > 0) socket.join(rooms);
});

server.on("request", (req, res) => {
  if (req.url.startsWith("/socket.io")) return; // engine.io answers these
  if (req.method !== "POST" || req.url !== "/emit") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(400).end("bad json");
      return;
    }
    if (typeof body.room !== "string" || typeof body.event !== "string") {
      res.writeHead(400).end("room and event are required");
      return;
    }
    io.to(body.room).emit(body.event, body.data);
    res.writeHead(204).end();
  });
});

server.listen(port, host, () => {
  const a = server.address();
  console.log(`peer listening http=${a.address}:${a.port}`);
});

process.on("SIGTERM", () => {
  io.close();
  process.exit(0);
});
