// Holds idle Socket.IO sockets for benches/scale.mjs: a child process (forked,
// so that each holds fewer sockets than one process's open-files limit) that
// connects `count` sockets as users u<offset> … u<offset+count-1>, one socket
// each, spread round-robin over the edges' URLs, over a bare WebSocket (the
// Engine.IO v4 / Socket.IO v5 frames: open, CONNECT with a JWT, ping → pong).
// Events the sockets receive are dropped: the bench counts deliveries from the
// edges' metrics. Reports {connected, failed} to its parent when done, and
// holds the sockets until it is killed.
//
//   argv[2]: JSON {urls: [...], offset, count, secret, concurrency}

import WebSocket from '../tests/e2e/node_modules/ws/wrapper.mjs';
import { claims, signHs256 } from '../tests/e2e/lib/jwt.mjs';

const { urls, offset, count, secret, concurrency = 200 } = JSON.parse(process.argv[2]);
const sockets = [];
let connected = 0;
let failed = 0;
let firstError;

/** One socket for user `u${i}`: resolves once its CONNECT was answered. */
function open(i) {
  const url = `${urls[i % urls.length].replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
  const token = signHs256(claims(`u${i}`), secret);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        ws.terminate();
        reject(err);
      } else resolve(ws);
    };
    const timer = setTimeout(() => finish(new Error('connect timed out after 30 s')), 30_000);
    ws.on('message', (data) => {
      const frame = data.toString();
      if (frame === '2') ws.send('3');
      else if (frame.startsWith('0')) ws.send(`40${JSON.stringify({ token })}`);
      else if (frame.startsWith('40')) finish();
      else if (frame.startsWith('44')) finish(new Error(`connect refused: ${frame}`));
    });
    ws.on('error', (err) => finish(err));
    ws.on('close', () => finish(new Error('closed before connect')));
  });
}

let next = offset;
const end = offset + count;
async function worker() {
  while (next < end) {
    const i = next++;
    try {
      sockets.push(await open(i));
      connected++;
    } catch (err) {
      failed++;
      firstError ??= String(err?.message ?? err);
    }
  }
}
await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
process.send?.({ connected, failed, firstError });
// Hold the sockets (answering pings) until the parent kills this process.
setInterval(() => {}, 1 << 30);
