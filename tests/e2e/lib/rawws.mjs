// A raw Engine.IO/Socket.IO client over the `ws` package, for sending frames the
// official client never would. It answers the server's pings (unless told not
// to) so that only what a test sends can make the server close the connection.

import WebSocket from 'ws';
import { waitFor, withTimeout } from './wait.mjs';

export class RawSocket {
  constructor(ws, { answerPings = true } = {}) {
    this.ws = ws;
    /** Text frames as strings, binary frames as Buffers, in arrival order. */
    this.frames = [];
    this.closed = null;
    /** Engine.IO pings received. */
    this.pings = 0;
    ws.on('message', (data, isBinary) => {
      const frame = isBinary ? Buffer.from(data) : data.toString();
      if (frame === '2') {
        this.pings += 1;
        if (answerPings) ws.send('3');
      } else this.frames.push(frame);
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
    // A reset connection shows up as an error before `close`; the close is what counts.
    ws.on('error', () => {});
  }

  /**
   * Opens `ws://…/socket.io/?EIO=4&transport=websocket` and waits for the Engine.IO
   * open packet; `.open` is its parsed payload.
   */
  static async connect(
    httpUrl,
    { path = '/socket.io/', query = 'EIO=4&transport=websocket', answerPings = true } = {},
  ) {
    const url = `${httpUrl.replace(/^http/, 'ws')}${path}?${query}`;
    const ws = new WebSocket(url);
    const raw = new RawSocket(ws, { answerPings });
    await withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      }),
      5000,
      `a WebSocket to ${url}`,
    );
    const open = await raw.nextFrame((f) => typeof f === 'string' && f.startsWith('0'));
    raw.open = JSON.parse(open.slice(1));
    return raw;
  }

  /** Connects to a namespace with a CONNECT packet; resolves to the Socket.IO sid. */
  async connectNamespace(namespace = '/', auth) {
    const prefix = namespace === '/' ? '' : `${namespace},`;
    this.send(`40${prefix}${auth ? JSON.stringify(auth) : ''}`);
    const reply = await this.nextFrame((f) => typeof f === 'string' && f.startsWith(`40${prefix}{`));
    return JSON.parse(reply.slice(2 + prefix.length)).sid;
  }

  send(frame) {
    this.ws.send(frame);
  }

  /** The first frame matching `predicate`; fails early if the connection closes first. */
  nextFrame(predicate, timeoutMs = 5000) {
    return waitFor(
      () => {
        const frame = this.frames.find(predicate);
        if (frame === undefined && this.closed) {
          throw new Error(`connection closed (${this.closed.code}) before the expected frame arrived`);
        }
        return frame;
      },
      timeoutMs,
      'a frame from the server',
    );
  }

  /** Resolves with `{code, reason}` once the server closed the connection. */
  waitClosed(timeoutMs = 5000) {
    return waitFor(() => this.closed, timeoutMs, 'the server to close the connection');
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  terminate() {
    this.ws.terminate();
  }
}
