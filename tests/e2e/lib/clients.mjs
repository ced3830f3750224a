// socket.io-client helpers: open sockets that record every event they receive,
// wait for `connect` / `connect_error`, and close everything at the end of a test.

import { io, Manager } from 'socket.io-client';
import { waitFor, withTimeout } from './wait.mjs';

const CONNECT_TIMEOUT_MS = 5000;

/**
 * The transports sockets use unless a test names its own:
 * ROOMCAST_E2E_TRANSPORTS=polling (long-polling only) or a comma-separated
 * list; socket.io-client's default (polling, then the upgrade to WebSocket)
 * when unset.
 */
function defaultTransports() {
  const list = process.env.ROOMCAST_E2E_TRANSPORTS;
  return list ? { transports: list.split(',') } : {};
}

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

async function connected(client) {
  await waitConnected(client.socket);
  return client;
}

/**
 * Opens socket.io-client sockets and closes all of them in `closeAll()` (call it
 * from `afterEach`/`after`). Takes one server URL or a list (the edges of a
 * cluster): sockets are spread over the list round-robin, and `openAt(i, …)` /
 * `connectAt(i, …)` pick the i-th URL. Every socket gets its own Engine.IO
 * connection (`forceNew`) and does not reconnect unless asked to.
 */
export class SocketPool {
  constructor(httpUrls) {
    this.httpUrls = [httpUrls].flat();
    if (this.httpUrls.length === 0) throw new Error('SocketPool needs at least one URL');
    this.next = 0;
    this.sockets = [];
    this.managers = [];
  }

  /** The first URL. */
  get httpUrl() {
    return this.httpUrls[0];
  }

  /** The URL the next socket or Manager goes to, advancing the round-robin. */
  nextUrl() {
    return this.httpUrls[this.next++ % this.httpUrls.length];
  }

  urlAt(index) {
    return this.httpUrls[index % this.httpUrls.length];
  }

  /** Creates a TestClient whose socket starts connecting now; doesn't wait. */
  open(namespace = '/', opts = {}) {
    return this.#open(this.nextUrl(), namespace, opts);
  }

  /** Like `open`, against the `index`-th URL. */
  openAt(index, namespace = '/', opts = {}) {
    return this.#open(this.urlAt(index), namespace, opts);
  }

  #open(httpUrl, namespace, opts) {
    const socket = io(`${httpUrl}${namespace}`, {
      forceNew: true,
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      ...defaultTransports(),
      ...opts,
    });
    this.sockets.push(socket);
    const client = new TestClient(socket);
    client.httpUrl = httpUrl;
    return client;
  }

  /** Opens and waits for `connect`; rejects with the connect_error otherwise. */
  connect(namespace = '/', opts = {}) {
    return connected(this.open(namespace, opts));
  }

  /** Like `connect`, against the `index`-th URL. */
  connectAt(index, namespace = '/', opts = {}) {
    return connected(this.openAt(index, namespace, opts));
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

  /**
   * A Manager (one Engine.IO connection, so one URL: the next in turn, or the
   * `index`-th when given) to multiplex several namespaces over.
   */
  manager(opts = {}, index = undefined) {
    const manager = new Manager(index === undefined ? this.nextUrl() : this.urlAt(index), {
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      ...defaultTransports(),
      ...opts,
    });
    this.managers.push(manager);
    return {
      manager,
      connect: (namespace, socketOpts = {}) => {
        const socket = manager.socket(namespace, socketOpts);
        this.sockets.push(socket);
        return connected(new TestClient(socket));
      },
    };
  }

  closeAll() {
    for (const socket of this.sockets.splice(0)) socket.close();
    for (const manager of this.managers.splice(0)) manager.engine?.close();
  }
}

/**
 * Proves nothing else is on its way to `clients`, so that counts of what they
 * received are final. roomcast keeps one producer's emits in order per path (a
 * room, a namespace-wide selector, socket ids), not across paths, so a uniquely
 * tagged "sentinel" event goes down every path an earlier emit may have taken,
 * and every client must receive each one:
 *   - to each namespace of `clients` (namespace-wide emits, exceptions included);
 *   - to the clients' socket ids (emits to socket ids and to own-id rooms);
 *   - for each of `rooms`, to that room and the clients' socket ids: members get
 *     it through the room, after every earlier emit to that room; the others
 *     through their socket id;
 *   - for each of `users`, likewise to that user id and the clients' socket ids
 *     (emits selected by user id).
 * `options` is `{ rooms, users, namespaces, timeoutMs }` (or, as before, the list
 * of namespaces); namespaces default to those of `clients`.
 */
let sentinelSeq = 0;
export async function settle(api, clients, options = {}) {
  const { rooms = [], users = [], namespaces = [], timeoutMs = 5000 } = Array.isArray(options)
    ? { namespaces: options }
    : options;
  const idsByNamespace = new Map(namespaces.map((ns) => [ns, []]));
  for (const client of clients) {
    const ns = client.socket.nsp;
    if (!idsByNamespace.has(ns)) idsByNamespace.set(ns, []);
    idsByNamespace.get(ns).push(client.id);
  }
  const tagsByNamespace = new Map();
  for (const [namespace, socketIds] of idsByNamespace) {
    const tags = [];
    tagsByNamespace.set(namespace, tags);
    const selectors = [{ namespace }];
    if (socketIds.length) {
      selectors.push({ namespace, socket_ids: socketIds });
      for (const room of rooms) selectors.push({ namespace, rooms: [room], socket_ids: socketIds });
      for (const user of users) selectors.push({ namespace, user_ids: [user], socket_ids: socketIds });
    }
    for (const to of selectors) {
      const tag = `sentinel-${process.pid}-${++sentinelSeq}`;
      tags.push(tag);
      await api.emit({ to, event: 'sentinel', args_json: JSON.stringify([tag]) });
    }
  }
  const settled = (client) => {
    const received = new Set(client.argsOf('sentinel').map((args) => args[0]));
    return tagsByNamespace.get(client.socket.nsp).every((tag) => received.has(tag));
  };
  await waitFor(
    () => clients.every(settled),
    timeoutMs,
    `every socket to receive the sentinels sent to ${[...idsByNamespace.keys()].join(', ')}` +
      (rooms.length ? ` (through rooms ${rooms.join(', ')} too)` : '') +
      (users.length ? ` (through users ${users.join(', ')} too)` : ''),
  );
}

/** The bytes of a binary argument as received by socket.io-client (Buffer or ArrayBuffer). */
export function bytesOf(value) {
  if (Buffer.isBuffer(value)) return Buffer.from(value);
  if (value instanceof ArrayBuffer) return Buffer.from(new Uint8Array(value));
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected binary data, got ${JSON.stringify(value)}`);
}
