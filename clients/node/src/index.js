// @roomcast/server: the Socket.IO server API over roomcast's gRPC API.
//
// `Roomcast` is the default namespace of one gRPC connection; `rc.of(ns)` gives
// other namespaces over the same connection. Selecting sockets mirrors
// Socket.IO's BroadcastOperator (`to`, `in`, `except`, `timeout`, `volatile`)
// and maps to a roomcast `Selector`. `on("connection")` opens two streams per
// namespace: WatchConnections (connects, disconnects) and ConsumeEvents (what
// clients emit), and joins them by socket id into `ServerSocket` objects.
// Every stream reopens with backoff when it ends (roomcast ends streams with
// UNAVAILABLE when it stops) and the namespace emits "reconnect" once it is live
// again: events of the gap may be lost.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const PROTO_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'proto');
const PROTO_FILE = path.join(PROTO_DIR, 'roomcast', 'v1', 'roomcast.proto');

const DEFAULT_ACK_TIMEOUT_MS = 5000;
const LIVE_HEADER = 'roomcast-stream';
/** gRPC codes after which a stream is not reopened: retrying cannot help. */
const FATAL_CODES = new Set([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNIMPLEMENTED,
  grpc.status.FAILED_PRECONDITION,
]);

let servicePromise;
function loadService() {
  if (!servicePromise) {
    const definition = protoLoader.loadSync(PROTO_FILE, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [PROTO_DIR],
    });
    servicePromise = grpc.loadPackageDefinition(definition).roomcast.v1.Roomcast;
  }
  return servicePromise;
}

/** An error of a roomcast call: the gRPC status `code` (see `status`) and the server's message. */
export class RoomcastError extends Error {
  constructor(method, cause) {
    super(`roomcast ${method}: ${cause.details || cause.message}`, { cause });
    this.name = 'RoomcastError';
    this.method = method;
    this.code = cause.code;
    this.details = cause.details;
  }
}

/** `emitWithAck` when some selected socket did not answer within the timeout. */
export class AckTimeoutError extends Error {
  constructor(results) {
    const missing = results.filter((r) => !r.acked).length;
    super(`operation has timed out: ${missing} of ${results.length} sockets did not acknowledge`);
    this.name = 'AckTimeoutError';
    /** The first ack argument of every socket that answered. */
    this.responses = results.filter((r) => r.acked).map((r) => r.args[0]);
    /** One entry per selected socket: { socketId, nodeId, acked, args }. */
    this.results = results;
  }
}

export const status = grpc.status;

// ---- binary arguments: Buffers <-> placeholders, as socket.io-parser does ----

function isBinary(value) {
  return Buffer.isBuffer(value) || value instanceof Uint8Array || value instanceof ArrayBuffer;
}

function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** `args` → `{ args_json, attachments }` with each binary value replaced by a placeholder. */
export function encodeArgs(args) {
  const attachments = [];
  const walk = (value) => {
    if (isBinary(value)) {
      attachments.push(toBuffer(value));
      return { _placeholder: true, num: attachments.length - 1 };
    }
    if (Array.isArray(value)) return value.map(walk);
    if (value && typeof value === 'object' && !(value instanceof Date)) {
      if (typeof value.toJSON === 'function') return value;
      const out = {};
      // defineProperty: a key named "__proto__" stays data, as JSON.parse made it.
      for (const [k, v] of Object.entries(value)) {
        Object.defineProperty(out, k, { value: walk(v), enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
    return value;
  };
  const encoded = args.map(walk);
  return { args_json: encoded.length ? JSON.stringify(encoded) : '', attachments };
}

/** `args_json` and attachments → the arguments, placeholders replaced by Buffers. */
export function decodeArgs(argsJson, attachments = []) {
  if (!argsJson) return [];
  const parsed = JSON.parse(argsJson);
  const walk = (value) => {
    if (Array.isArray(value)) return value.map(walk);
    if (value && typeof value === 'object') {
      if (value._placeholder === true && Number.isInteger(value.num) && value.num >= 0 && value.num < attachments.length) {
        return Buffer.from(attachments[value.num]);
      }
      for (const k of Object.keys(value)) {
        const walked = walk(value[k]);
        if (walked !== value[k]) value[k] = walked;
      }
    }
    return value;
  };
  return Array.isArray(parsed) ? parsed.map(walk) : [walk(parsed)];
}

function parseJson(text, fallback) {
  if (!text) return fallback;
  try {
    return JSON.parse(text);
  } catch {
    return fallback;
  }
}

const asList = (value) => (Array.isArray(value) ? value : value instanceof Set ? [...value] : [value]);
const RESERVED_EVENTS = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']);

function checkEvent(event) {
  if (typeof event !== 'string' || event === '') throw new TypeError('event name must be a non-empty string');
  if (RESERVED_EVENTS.has(event)) throw new TypeError(`"${event}" is a reserved event name`);
}

// ---- the gRPC connection ----

class Connection {
  constructor({ address, apiKey, credentials, deadlineMs, channelOptions }) {
    const Service = loadService();
    // Keepalive pings while a call is open, so that a stream over a dead
    // network fails (and reopens) instead of waiting forever.
    const options = { 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000, ...channelOptions };
    this.client = new Service(address, credentials ?? grpc.credentials.createInsecure(), options);
    this.apiKey = apiKey;
    this.deadlineMs = deadlineMs;
  }

  metadata() {
    const md = new grpc.Metadata();
    if (this.apiKey) md.set('authorization', `Bearer ${this.apiKey}`);
    return md;
  }

  unary(method, request, extraMs = 0) {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + this.deadlineMs + extraMs;
      this.client[method](request, this.metadata(), { deadline }, (err, res) =>
        err ? reject(new RoomcastError(method, err)) : resolve(res),
      );
    });
  }

  stream(method, request) {
    return this.client[method](request, this.metadata());
  }

  close() {
    this.client.close();
  }
}

/**
 * A server stream that reopens itself with exponential backoff (and jitter)
 * when it ends or fails with anything but a fatal code or our own cancel.
 * `onLive(reconnected)` runs each time the server's headers say it is live.
 */
class ResilientStream {
  constructor(conn, method, request, { onData, onLive, onFatal, backoff }) {
    Object.assign(this, { conn, method, request, onData, onLive, onFatal, backoff });
    this.closed = false;
    this.wasLive = false;
    this.attempt = 0;
    this.timer = null;
    this.firstLive = new Promise((resolve, reject) => {
      this.resolveLive = resolve;
      this.rejectLive = reject;
    });
    this.firstLive.catch(() => {});
    this.open();
  }

  open() {
    if (this.closed) return;
    const call = this.conn.stream(this.method, this.request);
    this.call = call;
    let ended = false;
    call.on('metadata', (md) => {
      const live = md.get(LIVE_HEADER);
      if (live.length === 0 || String(live[0]) !== 'live') return;
      this.attempt = 0;
      const reconnected = this.wasLive;
      this.wasLive = true;
      this.resolveLive();
      this.onLive(reconnected);
    });
    call.on('data', (message) => this.onData(message));
    const finish = (err) => {
      if (ended) return;
      ended = true;
      if (this.closed || this.call !== call) return;
      if (err && FATAL_CODES.has(err.code)) {
        this.closed = true;
        const error = new RoomcastError(this.method, err);
        this.rejectLive(error);
        this.onFatal(error);
        return;
      }
      this.schedule();
    };
    call.on('error', finish);
    call.on('end', () => finish(null));
  }

  schedule() {
    const { initialDelayMs, maxDelayMs } = this.backoff;
    const base = Math.min(maxDelayMs, initialDelayMs * 2 ** this.attempt);
    this.attempt += 1;
    const delay = base / 2 + Math.random() * (base / 2);
    // Not unref'd: a backend whose only work is this stream must not exit
    // while roomcast restarts.
    this.timer = setTimeout(() => this.open(), delay);
  }

  close() {
    this.closed = true;
    this.rejectLive(new Error('roomcast: closed'));
    clearTimeout(this.timer);
    this.call?.cancel();
  }
}

// ---- selecting sockets ----

/**
 * The sockets a call applies to, as Socket.IO's BroadcastOperator: every
 * method returns a new operator, so one can be kept and reused.
 */
export class BroadcastOperator {
  constructor(nsp, sel = {}, flags = {}) {
    this.nsp = nsp;
    this.sel = { rooms: [], socketIds: [], userIds: [], exceptRooms: [], exceptSocketIds: [], ...sel };
    this.flags = flags;
  }

  #with(patch, flags = {}) {
    const sel = { ...this.sel };
    for (const [k, v] of Object.entries(patch)) sel[k] = [...sel[k], ...v];
    return new BroadcastOperator(this.nsp, sel, { ...this.flags, ...flags });
  }

  /** Targets a room (or several); a socket id is a room too. */
  to(room) {
    return this.#with({ rooms: asList(room) });
  }

  in(room) {
    return this.to(room);
  }

  /** Leaves out the sockets of a room (or several); a socket id is a room too. */
  except(room) {
    return this.#with({ exceptRooms: asList(room) });
  }

  /** Targets every socket of a user (or several), wherever they are connected. */
  toUser(userId) {
    return this.#with({ userIds: asList(userId) });
  }

  /** Targets sockets by id. */
  toSocket(socketId) {
    return this.#with({ socketIds: asList(socketId) });
  }

  /** The emit may be dropped for a socket whose outbound queue is busy. */
  get volatile() {
    return this.#with({}, { volatile: true });
  }

  /** How long `emitWithAck` waits for the acks. */
  timeout(ms) {
    return this.#with({}, { timeoutMs: ms });
  }

  selector() {
    return {
      namespace: this.nsp.name,
      rooms: this.sel.rooms,
      socket_ids: this.sel.socketIds,
      user_ids: this.sel.userIds,
      except_rooms: this.sel.exceptRooms,
      except_socket_ids: this.sel.exceptSocketIds,
    };
  }

  /** Emits to the selected sockets (at most once). Resolves once roomcast took it. */
  async emit(event, ...args) {
    checkEvent(event);
    if (typeof args[args.length - 1] === 'function') {
      throw new TypeError('callbacks are not supported; use timeout(ms).emitWithAck(...)');
    }
    await this.nsp.conn.unary('Emit', { to: this.selector(), event, ...encodeArgs(args), volatile: !!this.flags.volatile });
  }

  /**
   * At-least-once emit to users or socket ids (`toUser`, `toSocket`): resent
   * until a socket of each recipient acks, or `ttlMs` passes. The last argument
   * is the options `{ ttlMs }` (required). Resolves to the message id, which
   * the client receives as `{ messageId }` before its ack callback and which
   * `rc.delivery(messageId)` looks up.
   */
  async emitReliable(event, ...argsAndOptions) {
    checkEvent(event);
    const options = argsAndOptions.pop();
    if (!options || typeof options !== 'object' || !Number.isInteger(options.ttlMs) || options.ttlMs < 1) {
      throw new TypeError('emitReliable(event, ...args, { ttlMs }): the last argument must be { ttlMs } with a positive integer');
    }
    const res = await this.nsp.conn.unary('Emit', {
      to: this.selector(),
      event,
      ...encodeArgs(argsAndOptions),
      at_least_once: true,
      ttl_ms: options.ttlMs,
    });
    return res.message_id;
  }

  /**
   * Emits with an ack callback and waits for every selected socket's ack
   * (`timeout(ms)` first; default 5000). Resolves to the first ack argument of
   * each socket; rejects with `AckTimeoutError` (with `.responses` and
   * `.results`) when some socket did not answer in time.
   */
  async emitWithAck(event, ...args) {
    const results = await this.emitWithAckResults(event, ...args);
    if (results.some((r) => !r.acked)) throw new AckTimeoutError(results);
    return results.map((r) => r.args[0]);
  }

  /** As `emitWithAck`, but resolves to every socket's `{ socketId, nodeId, acked, args }`, acked or not. */
  async emitWithAckResults(event, ...args) {
    checkEvent(event);
    const timeoutMs = this.flags.timeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
    const res = await this.nsp.conn.unary(
      'EmitWithAck',
      { to: this.selector(), event, ...encodeArgs(args), timeout_ms: timeoutMs },
      timeoutMs,
    );
    return res.results.map((r) => ({
      socketId: r.socket_id,
      nodeId: r.node_id,
      acked: r.acked,
      args: r.acked ? decodeArgs(r.args_json, r.attachments) : [],
    }));
  }

  /** The selected sockets, wherever they are connected. */
  async fetchSockets() {
    const res = await this.nsp.conn.unary('FetchSockets', { target: this.selector() });
    return res.sockets.map((info) => new RemoteSocket(this.nsp, info));
  }

  /** Makes the selected sockets join a room (or several). */
  async socketsJoin(room) {
    await this.nsp.conn.unary('JoinRooms', { target: this.selector(), rooms: asList(room) });
  }

  /** Makes the selected sockets leave a room (or several). */
  async socketsLeave(room) {
    await this.nsp.conn.unary('LeaveRooms', { target: this.selector(), rooms: asList(room) });
  }

  /**
   * Disconnects the selected sockets (`close`: their whole connection, every
   * namespace). Resolves to how many were disconnected.
   */
  async disconnectSockets(close = false) {
    const res = await this.nsp.conn.unary('DisconnectSockets', { target: this.selector(), close });
    return res.disconnected;
  }
}

function handshakeOf(info, auth) {
  return {
    auth,
    query: { ...info.query },
    headers: { ...info.headers },
    address: info.remote_addr,
    transport: info.transport,
  };
}

/** A socket as `fetchSockets()` describes it, with methods that act on it through roomcast. */
export class RemoteSocket {
  constructor(nsp, info) {
    this.nsp = nsp;
    this.id = info.id;
    this.userId = info.user_id || undefined;
    this.namespace = info.namespace;
    this.nodeId = info.node_id;
    this.rooms = new Set(info.rooms);
    this.data = parseJson(info.data_json, undefined);
    this.connectedAt = Number(info.connected_at_ms);
    this.handshake = { ...handshakeOf(info, undefined), issued: Number(info.connected_at_ms) };
  }

  #op() {
    return new BroadcastOperator(this.nsp, { socketIds: [this.id] });
  }

  emit(event, ...args) {
    return this.#op().emit(event, ...args);
  }

  join(room) {
    return this.#op().socketsJoin(room);
  }

  leave(room) {
    return this.#op().socketsLeave(room);
  }

  disconnect(close = false) {
    return this.#op().disconnectSockets(close);
  }
}

/**
 * A socket handed to `on("connection")`: its handshake, and the events its
 * client emits (`on(event, (...args, ack) => ...)`, `on("disconnect", reason => ...)`).
 */
export class ServerSocket {
  constructor(nsp, { id, userId, nodeId, rooms, auth, query, headers, address, transport, data, recovered, issued }) {
    this.nsp = nsp;
    this.id = id;
    this.userId = userId || undefined;
    this.nodeId = nodeId;
    /** The rooms as last known here: at connect, then changed by this object's join/leave. */
    this.rooms = new Set([id, ...rooms]);
    this.handshake = { auth, query, headers, address, transport, issued, time: new Date(issued).toString() };
    /** What the connect hook returned as data; free for the backend to change (kept in this process only). */
    this.data = data;
    this.recovered = recovered;
    this.connected = true;
    this.listeners = new Map();
  }

  get namespace() {
    return this.nsp.name;
  }

  /** Listens to an event of this socket's client, or "disconnect". */
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(listener);
    return this;
  }

  once(event, listener) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      return listener(...args);
    };
    return this.on(event, wrapper);
  }

  off(event, listener) {
    const list = this.listeners.get(event);
    if (list) this.listeners.set(event, listener ? list.filter((l) => l !== listener) : []);
    return this;
  }

  /** Calls the listeners of `event`; an error (or rejection) of one goes to the namespace's "error". */
  dispatch(event, args) {
    for (const listener of this.listeners.get(event) ?? []) {
      try {
        const result = listener(...args);
        if (result && typeof result.catch === 'function') result.catch((err) => this.nsp.fail(err));
      } catch (err) {
        this.nsp.fail(err);
      }
    }
  }

  #op() {
    return new BroadcastOperator(this.nsp, { socketIds: [this.id] });
  }

  /** Emits to this socket's client. */
  emit(event, ...args) {
    return this.#op().emit(event, ...args);
  }

  /** Emits to this socket's client with an ack; resolves to the ack's first argument. */
  emitWithAck(event, ...args) {
    return this.timeout(this.nsp.defaultAckTimeoutMs).emitWithAck(event, ...args);
  }

  /** `socket.timeout(ms).emitWithAck(...)`: rejects with AckTimeoutError when no ack came within `ms`. */
  timeout(ms) {
    const op = this.#op().timeout(ms);
    return {
      emitWithAck: async (event, ...args) => {
        const responses = await op.emitWithAck(event, ...args);
        if (responses.length === 0) throw new AckTimeoutError([{ socketId: this.id, nodeId: this.nodeId, acked: false, args: [] }]);
        return responses[0];
      },
    };
  }

  /** Sockets of a room other than this one (Socket.IO's `socket.to(room)`). */
  to(room) {
    return new BroadcastOperator(this.nsp, { rooms: asList(room), exceptSocketIds: [this.id] });
  }

  in(room) {
    return this.to(room);
  }

  /** Every socket of the namespace but this one (Socket.IO's `socket.broadcast`). */
  get broadcast() {
    return new BroadcastOperator(this.nsp, { exceptSocketIds: [this.id] });
  }

  async join(room) {
    const rooms = asList(room);
    await this.#op().socketsJoin(rooms);
    for (const r of rooms) this.rooms.add(r);
  }

  async leave(room) {
    const rooms = asList(room);
    await this.#op().socketsLeave(rooms);
    for (const r of rooms) this.rooms.delete(r);
  }

  /** Disconnects the socket (`close`: its whole connection). Its "disconnect" listeners run when roomcast reports it. */
  async disconnect(close = false) {
    await this.#op().disconnectSockets(close);
    return this;
  }
}

// ---- namespaces ----

/**
 * How long an event of an unknown socket waits for the socket's connect before
 * it is looked up: without a group the connect comes here, only later than the
 * event (the two streams are not ordered); with one it may have gone to
 * another replica, so the wait is short.
 */
const ORPHAN_WAIT_MS = 1000;
const ORPHAN_WAIT_GROUP_MS = 200;
/** Most events of one unknown socket held while its connect is awaited; more are dropped. */
const ORPHAN_MAX_EVENTS = 256;
/** Socket ids per FetchSockets call when checking which known sockets are gone. */
const SWEEP_CHUNK = 1000;
/** The disconnect reason of a socket found gone without its disconnect event having come here. */
export const MISSED_DISCONNECT = 'missed disconnect';

/**
 * A namespace: selects its sockets (as `BroadcastOperator`) and emits
 * "connection", "user-status", "reconnect" and "error".
 */
export class Namespace {
  constructor(conn, name, options, root) {
    this.handlers = new Map();
    this.conn = conn;
    this.name = name;
    this.options = options;
    this.root = root ?? this;
    this.defaultAckTimeoutMs = options.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
    this.sockets = new Map();
    this.orphans = new Map();
    this.streams = [];
    this.connectionsStarted = false;
    this.presenceStarted = false;
    this.closed = false;
  }

  /**
   * Listens to "connection" (a `ServerSocket`), "user-status"
   * (`{ userId, status, lastSeen, rooms }`), "reconnect" (`{ stream, namespace }`:
   * a stream is live again after a gap whose events may be lost) or "error".
   * The first "connection" or "user-status" listener opens its streams.
   */
  on(event, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(listener);
    if (!this.closed && event === 'connection') this.#startConnections();
    if (!this.closed && event === 'user-status') this.#startPresence();
    return this;
  }

  off(event, listener) {
    const list = this.handlers.get(event);
    if (list) this.handlers.set(event, listener ? list.filter((l) => l !== listener) : []);
    return this;
  }

  listenerCount(event) {
    return this.handlers.get(event)?.length ?? 0;
  }

  /** Calls the listeners of a namespace event; what one throws goes to "error". */
  fire(event, ...args) {
    // An "error" listener that fails is only warned about: no loop.
    const failed = (err) => (event === 'error' ? process.emitWarning(`roomcast: ${err?.stack ?? err}`) : this.fail(err));
    for (const listener of this.handlers.get(event) ?? []) {
      try {
        const result = listener(...args);
        if (result && typeof result.catch === 'function') result.catch(failed);
      } catch (err) {
        failed(err);
      }
    }
  }

  #op() {
    return new BroadcastOperator(this);
  }

  to(room) {
    return this.#op().to(room);
  }

  in(room) {
    return this.#op().in(room);
  }

  except(room) {
    return this.#op().except(room);
  }

  toUser(userId) {
    return this.#op().toUser(userId);
  }

  toSocket(socketId) {
    return this.#op().toSocket(socketId);
  }

  timeout(ms) {
    return this.#op().timeout(ms);
  }

  get volatile() {
    return this.#op().volatile;
  }

  /** Emits to every socket of the namespace. */
  emit(event, ...args) {
    return this.#op().emit(event, ...args);
  }

  emitWithAck(event, ...args) {
    return this.#op().emitWithAck(event, ...args);
  }

  fetchSockets() {
    return this.#op().fetchSockets();
  }

  socketsJoin(room) {
    return this.#op().socketsJoin(room);
  }

  socketsLeave(room) {
    return this.#op().socketsLeave(room);
  }

  disconnectSockets(close = false) {
    return this.#op().disconnectSockets(close);
  }

  /** The rooms of the namespace that have members: `Map` of name → member count. */
  async rooms() {
    const res = await this.conn.unary('ListRooms', { namespace: this.name });
    return new Map(res.rooms.map((r) => [r.name, r.members]));
  }

  /**
   * Resolves once every stream opened so far (by the "connection" and
   * "user-status" listeners) is live: clients that connect or emit after it
   * are seen. Rejects when a stream fails for good (e.g. UNAUTHENTICATED).
   */
  async ready() {
    await Promise.all(this.streams.map((s) => s.firstLive));
    return this;
  }

  /** Another namespace over the same connection. */
  of(name) {
    return this.root.of(name);
  }

  /** Reports an error to "error" listeners; without any, it is written to stderr (never thrown). */
  fail(err) {
    if (this.listenerCount('error') > 0) this.fire('error', err);
    else process.emitWarning(`roomcast: ${err?.stack ?? err}`);
  }

  #open(method, request, onData, what, onLive = () => {}) {
    const stream = new ResilientStream(this.conn, method, request, {
      backoff: this.options.backoff,
      onData: (message) => {
        try {
          onData(message);
        } catch (err) {
          this.fail(err);
        }
      },
      onLive: (reconnected) => {
        onLive(reconnected);
        if (reconnected) this.fire('reconnect', { stream: what, namespace: this.name });
      },
      onFatal: (err) => this.fail(err),
    });
    this.streams.push(stream);
  }

  #startConnections() {
    if (this.connectionsStarted) return;
    this.connectionsStarted = true;
    const group = this.options.group ?? '';
    this.#open('WatchConnections', { namespace: this.name, group }, (ev) => this.#onConnectionEvent(ev), 'connections', (reconnected) => {
      if (reconnected) this.#reconcile().catch((err) => this.fail(err));
    });
    this.#open(
      'ConsumeEvents',
      { namespace: this.name, group, events: [] },
      (ev) => this.#onClientEvent(ev),
      'events',
    );
    if (group) {
      this.sweepTimer = setInterval(() => this.#reconcile().catch((err) => this.fail(err)), this.options.sweepMs);
      this.sweepTimer.unref?.();
    }
  }

  #startPresence() {
    if (this.presenceStarted) return;
    this.presenceStarted = true;
    this.#open(
      'WatchPresence',
      { namespace: this.name, room: '', user_ids: [] },
      (ev) => {
        if (ev.kind !== 'online' && ev.kind !== 'offline') return;
        this.fire('user-status', {
          userId: ev.user_id,
          status: ev.kind,
          lastSeen: Number(ev.last_seen_ms),
          rooms: ev.rooms,
        });
      },
      'presence',
    );
  }

  /**
   * Sockets known here that roomcast no longer has get their "disconnect",
   * with reason MISSED_DISCONNECT: run after the connections stream reopened,
   * and, with a group, every `sweepMs` (another replica may have got the
   * disconnect of a socket whose events came here).
   */
  async #reconcile() {
    const ids = [...this.sockets.keys()];
    for (let i = 0; i < ids.length; i += SWEEP_CHUNK) {
      const chunk = ids.slice(i, i + SWEEP_CHUNK);
      const live = new Set((await this.toSocket(chunk).fetchSockets()).map((s) => s.id));
      for (const id of chunk) {
        if (!live.has(id)) this.#disconnected(id, MISSED_DISCONNECT);
      }
    }
  }

  #adopt(socket) {
    this.sockets.set(socket.id, socket);
    this.fire('connection', socket);
    const waiting = this.orphans.get(socket.id);
    if (waiting) {
      clearTimeout(waiting.timer);
      this.orphans.delete(socket.id);
      for (const ev of waiting.events) this.#deliver(socket, ev);
    }
  }

  #onConnectionEvent(ev) {
    if (ev.kind === 'connect') {
      const known = this.sockets.get(ev.socket_id);
      if (known) {
        // Looked up before its connect came: the connect brings the auth.
        if (known.handshake.auth === undefined) known.handshake.auth = parseJson(ev.auth_json, {});
        return;
      }
      this.#adopt(
        new ServerSocket(this, {
          id: ev.socket_id,
          userId: ev.user_id,
          nodeId: ev.node_id,
          rooms: ev.rooms,
          auth: parseJson(ev.auth_json, {}),
          query: { ...ev.query },
          headers: { ...ev.headers },
          address: ev.remote_addr,
          transport: ev.transport,
          data: parseJson(ev.data_json, {}),
          recovered: ev.recovered,
          issued: Number(ev.at_ms),
        }),
      );
    } else if (ev.kind === 'disconnect') {
      this.#disconnected(ev.socket_id, ev.reason);
    }
  }

  #disconnected(id, reason) {
    const orphan = this.orphans.get(id);
    if (orphan) {
      clearTimeout(orphan.timer);
      this.orphans.delete(id);
    }
    const socket = this.sockets.get(id);
    if (!socket) return;
    this.sockets.delete(id);
    socket.connected = false;
    socket.dispatch('disconnect', [reason]);
  }

  #onClientEvent(ev) {
    const socket = this.sockets.get(ev.socket_id);
    if (socket) {
      this.#deliver(socket, ev);
      return;
    }
    // The socket's connect has not come (yet): the two streams are not ordered
    // with each other, and with a group it may have gone to another replica.
    let waiting = this.orphans.get(ev.socket_id);
    if (!waiting) {
      waiting = { events: [], timer: null };
      waiting.timer = setTimeout(() => this.#lookUp(ev.socket_id), this.options.group ? ORPHAN_WAIT_GROUP_MS : ORPHAN_WAIT_MS);
      this.orphans.set(ev.socket_id, waiting);
    }
    if (waiting.events.length >= ORPHAN_MAX_EVENTS) {
      this.fail(new Error(`roomcast: dropped event "${ev.event}" of socket ${ev.socket_id}, whose connect has not come`));
      return;
    }
    waiting.events.push(ev);
  }

  /** An event's socket never showed its connect here: build it from FetchSockets (no handshake auth). */
  async #lookUp(id) {
    try {
      const [info] = await this.toSocket(id).fetchSockets();
      if (!this.orphans.has(id)) return;
      if (!info) {
        this.orphans.delete(id);
        return;
      }
      this.#adopt(
        new ServerSocket(this, {
          id,
          userId: info.userId,
          nodeId: info.nodeId,
          rooms: [...info.rooms].filter((r) => r !== id),
          auth: undefined,
          query: info.handshake.query,
          headers: info.handshake.headers,
          address: info.handshake.address,
          transport: info.handshake.transport,
          data: info.data ?? {},
          recovered: false,
          issued: info.connectedAt,
        }),
      );
    } catch (err) {
      this.orphans.delete(id);
      this.fail(err);
    }
  }

  #deliver(socket, ev) {
    // roomcast refuses these from clients; never let one pose as "disconnect".
    if (RESERVED_EVENTS.has(ev.event)) return;
    let args;
    try {
      args = decodeArgs(ev.args_json, ev.attachments);
    } catch (err) {
      this.fail(new Error(`roomcast: event "${ev.event}" of socket ${ev.socket_id} has malformed arguments`, { cause: err }));
      return;
    }
    if (ev.ack_id !== undefined && ev.ack_id !== null) {
      let answered = false;
      args.push((...reply) => {
        if (answered) return;
        answered = true;
        this.conn
          .unary('Reply', {
            reply_to: ev.reply_to,
            socket_id: ev.socket_id,
            namespace: ev.namespace,
            ack_id: ev.ack_id,
            ...encodeArgs(reply),
          })
          .catch((err) => this.fail(err));
      });
    }
    socket.dispatch(ev.event, args);
  }

  closeStreams() {
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const s of this.streams) s.close();
    for (const o of this.orphans.values()) clearTimeout(o.timer);
    this.orphans.clear();
  }
}

/**
 * A connection to roomcast's gRPC API, and its default namespace.
 *
 *   const rc = new Roomcast({ address: "127.0.0.1:50051", apiKey, namespace: "/" });
 *   await rc.to("room").except("muted").emit("message", { text: "hi" });
 */
export class Roomcast extends Namespace {
  /**
   * @param options.address   "host:port" of the gRPC API (a control plane, or standalone)
   * @param options.apiKey    sent as `authorization: Bearer <key>`
   * @param options.namespace the default namespace ("/")
   * @param options.group     consumer group of the "connection" streams: replicas with the same group share sockets
   * @param options.credentials grpc-js channel credentials (TLS); insecure by default
   * @param options.deadlineMs deadline of each call (10000)
   * @param options.ackTimeoutMs default timeout of a socket's emitWithAck (5000)
   * @param options.backoff   `{ initialDelayMs: 100, maxDelayMs: 5000 }` between stream reopen attempts
   * @param options.sweepMs   with a group: how often sockets known here are checked for a disconnect
   *                          another replica got (30000)
   */
  constructor({
    address,
    apiKey,
    namespace = '/',
    group,
    credentials,
    deadlineMs = 10_000,
    ackTimeoutMs,
    backoff,
    channelOptions,
    sweepMs = 30_000,
  } = {}) {
    if (typeof address !== 'string' || address === '') throw new TypeError('Roomcast: `address` ("host:port") is required');
    const conn = new Connection({ address, apiKey, credentials, deadlineMs, channelOptions });
    const options = { group, ackTimeoutMs, sweepMs, backoff: { initialDelayMs: 100, maxDelayMs: 5000, ...backoff } };
    super(conn, namespace, options, null);
    this.namespaces = new Map([[namespace, this]]);
  }

  of(name) {
    let nsp = this.namespaces.get(name);
    if (!nsp) {
      nsp = new Namespace(this.conn, name, this.options, this);
      this.namespaces.set(name, nsp);
    }
    return nsp;
  }

  /** The presence of users: `[{ userId, online, lastSeen, sockets }]` in the order asked. */
  async presence(userIds) {
    const res = await this.conn.unary('GetPresence', { user_ids: asList(userIds), namespace: this.name, room: '' });
    return res.users.map((u) => ({
      userId: u.user_id,
      online: u.online,
      lastSeen: Number(u.last_seen_ms),
      sockets: u.sockets,
    }));
  }

  /** The users and sockets in a room: `{ userIds, sockets }` (sockets as `fetchSockets` gives them). */
  async roomPresence(room, namespace = this.name) {
    const res = await this.conn.unary('GetPresence', { user_ids: [], room, namespace });
    return {
      userIds: res.room_user_ids,
      sockets: res.room_sockets.map((info) => new RemoteSocket(this.of(namespace), info)),
    };
  }

  /**
   * Where an at-least-once emit stands: `{ messageId, status, recipients: [{ userId, socketId, status, doneAt }] }`,
   * status being "pending", "acked", "expired" or "purged".
   */
  async delivery(messageId) {
    const res = await this.conn.unary('GetDelivery', { message_id: messageId });
    const statusName = (s) => String(s).replace('DELIVERY_STATUS_', '').toLowerCase();
    return {
      messageId: res.message_id,
      namespace: res.namespace,
      event: res.event,
      status: statusName(res.status),
      createdAt: Number(res.created_at_ms),
      expiresAt: Number(res.expires_at_ms),
      recipients: res.recipients.map((r) => ({
        userId: r.user_id || undefined,
        socketId: r.socket_id || undefined,
        status: statusName(r.status),
        doneAt: Number(r.done_at_ms),
      })),
    };
  }

  /** The at-least-once messages still waiting for a user, in delivery order. */
  async inbox(userId, namespace = this.name) {
    const res = await this.conn.unary('GetInbox', { namespace, user_id: userId, socket_id: '' });
    return res.entries.map((e) => ({
      messageId: e.message_id,
      event: e.event,
      args: parseJson(e.args_json, []),
      createdAt: Number(e.created_at_ms),
      expiresAt: Number(e.expires_at_ms),
    }));
  }

  /** Drops every message waiting for a user; resolves to how many. */
  async purgeInbox(userId, namespace = this.name) {
    const res = await this.conn.unary('PurgeInbox', { namespace, user_id: userId, socket_id: '' });
    return res.purged;
  }

  /** Resolves once the streams of every namespace are live (see `Namespace.ready`). */
  async ready() {
    await Promise.all([...this.namespaces.values()].flatMap((nsp) => nsp.streams.map((s) => s.firstLive)));
    return this;
  }

  /** Closes every stream and the gRPC connection. */
  close() {
    for (const nsp of this.namespaces.values()) nsp.closeStreams();
    this.conn.close();
  }
}

export default Roomcast;
