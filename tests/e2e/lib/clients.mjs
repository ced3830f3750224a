// socket.io-client helpers: open sockets that record every event they receive,
// wait for `connect` / `connect_error`, and close everything at the end of a test.

import { io, Manager } from 'socket.io-client';
import { waitFor, withTimeout } from './wait.mjs';

const CONNECT_TIMEOUT_MS = 5000;

/** A socket.io-client Socket plus the list of events it received (via onAny). */
export class TestClient {
  constructor(socket) {
    this.socket = socket;
    /** Every event received, in order: `{ event, args }`. */
    this.received = [];
    socket.onAny((event, ...args) => this.received.push({ event, args }));
  }

  get id() {
    return this.socket.id;
  }

  /** The argument lists of every received `event`, in arrival order. */
  argsOf(event) {
    return this.received.filter((e) => e.event === event).map((e) => e.args);
  }

  count(event) {
    return this.argsOf(event).length;
  }

  /** Waits for an `event` whose args satisfy `predicate`; returns those args. */
  nextEvent(event, predicate = () => true, timeoutMs = 5000) {
    return waitFor(
      () => this.argsOf(event).find((args) => predicate(args)),
      timeoutMs,
      `socket ${this.id} to receive "${event}"`,
    );
  }

  /** Emits with an ack callback; resolves with every ack argument (an array). */
  emitWithAckArgs(event, ...args) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(CONNECT_TIMEOUT_MS).emit(event, ...args, (err, ...ackArgs) =>
        err ? reject(new Error(`no ack for "${event}" within ${CONNECT_TIMEOUT_MS}ms`)) : resolve(ackArgs),
      );
    });
  }
}

/** Resolves when `socket` is connected; rejects with the connect_error's Error. */
export function waitConnected(socket, timeoutMs = CONNECT_TIMEOUT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(socket));
      socket.once('connect_error', reject);
    }),
    timeoutMs,
    `socket for ${socket.nsp} to connect`,
  );
}

/** Resolves with the connect_error's Error; rejects if the socket connects instead. */
export function waitConnectError(socket, timeoutMs = CONNECT_TIMEOUT_MS) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect_error', resolve);
      socket.once('connect', () =>
        reject(new Error(`socket for ${socket.nsp} connected, expected a connect_error`)),
      );
    }),
    timeoutMs,
    `a connect_error for ${socket.nsp}`,
  );
}

/**
 * Opens socket.io-client sockets against one server and closes all of them in
 * `closeAll()` (call it from `afterEach`/`after`). Every socket gets its own
 * Engine.IO connection (`forceNew`) and does not reconnect unless asked to.
 */
export class SocketPool {
  constructor(httpUrl) {
    this.httpUrl = httpUrl;
    this.sockets = [];
    this.managers = [];
  }

  /** Creates a TestClient whose socket starts connecting now; doesn't wait. */
  open(namespace = '/', opts = {}) {
    const socket = io(`${this.httpUrl}${namespace}`, {
      forceNew: true,
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      ...opts,
    });
    this.sockets.push(socket);
    return new TestClient(socket);
  }

  /** Opens and waits for `connect`; rejects with the connect_error otherwise. */
  async connect(namespace = '/', opts = {}) {
    const client = this.open(namespace, opts);
    await waitConnected(client.socket);
    return client;
  }

  /** Opens a socket that must be refused; resolves with the connect_error's Error. */
  async connectError(namespace = '/', opts = {}) {
    const client = this.open(namespace, opts);
    try {
      return await waitConnectError(client.socket);
    } finally {
      client.socket.close();
    }
  }

  /** A Manager (one Engine.IO connection) to multiplex several namespaces over. */
  manager(opts = {}) {
    const manager = new Manager(this.httpUrl, {
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      ...opts,
    });
    this.managers.push(manager);
    return {
      manager,
      connect: async (namespace, socketOpts = {}) => {
        const socket = manager.socket(namespace, socketOpts);
        this.sockets.push(socket);
        const client = new TestClient(socket);
        await waitConnected(socket);
        return client;
      },
    };
  }

  closeAll() {
    for (const socket of this.sockets.splice(0)) socket.close();
    for (const manager of this.managers.splice(0)) manager.engine?.close();
  }
}

/**
 * Proves nothing else is on its way to `clients`: emits a uniquely tagged
 * "sentinel" event to every socket of each namespace and waits until every client
 * has it. Events are delivered to a socket in the order they were emitted, so once
 * the sentinel is in, everything emitted before it has arrived too, and counts of
 * earlier events are final.
 */
let sentinelSeq = 0;
export async function settle(api, clients, namespaces = ['/'], timeoutMs = 5000) {
  const tag = `sentinel-${process.pid}-${++sentinelSeq}`;
  for (const namespace of namespaces) {
    await api.emit({ to: { namespace }, event: 'sentinel', args_json: JSON.stringify([tag]) });
  }
  await waitFor(
    () => clients.every((c) => c.argsOf('sentinel').some((args) => args[0] === tag)),
    timeoutMs,
    `every socket to receive the sentinel emitted to ${namespaces.join(', ')}`,
  );
}

/** The bytes of a binary argument as received by socket.io-client (Buffer or ArrayBuffer). */
export function bytesOf(value) {
  if (Buffer.isBuffer(value)) return Buffer.from(value);
  if (value instanceof ArrayBuffer) return Buffer.from(new Uint8Array(value));
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected binary data, got ${JSON.stringify(value)}`);
}
