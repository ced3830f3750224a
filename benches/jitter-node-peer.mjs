// Node socket.io 4.8 server with connection state recovery, for the
// connection-jitter benchmark (benches/jitter.mjs). Uses the socket.io of
// benches/peers/node (run `npm ci` there first).
//
// Sockets join the rooms of their CONNECT auth object (`{rooms: [...]}`) unless
// they were recovered (then socket.io gives their rooms back itself).
// `POST /emit` with `{"room": "...", "event": "...", "data": ...}` broadcasts to
// a room; `GET /readyz` answers 200 (for the benchmark's balancer). Prints
// `peer listening http=HOST:PORT` when ready.
import http from "node:http";
import { createRequire } from "node:module";

const require = createRequire(new URL("./peers/node/package.json", import.meta.url));
const { Server } = require("socket.io");

const host = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 0);
const windowMs = Number(process.env.RECOVERY_WINDOW_MS ?? 120_000);

const server = http.createServer();
const io = new Server(server, {
  serveClient: false,
  transports: ["websocket", "polling"],
  connectionStateRecovery: { maxDisconnectionDuration: windowMs, skipMiddlewares: true },
});

io.on("connection", (socket) => {
  if (socket.recovered) return;
  const rooms = socket.handshake.auth?.rooms;
  if (Array.isArray(rooms) && rooms.length > 0) socket.join(rooms.map(String));
});

server.on("request", (req, res) => {
  if (req.url.startsWith("/socket.io")) return; // engine.io answers these
  if (req.method === "GET" && req.url === "/readyz") {
    res.writeHead(200).end("ok");
    return;
  }
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
    if (typeof body?.room !== "string" || typeof body?.event !== "string") {
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
