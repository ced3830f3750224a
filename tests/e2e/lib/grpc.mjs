// A promise-based client for the roomcast.v1.Roomcast gRPC API, loaded from the
// proto at test time. Field names are kept as in the proto (snake_case: `socket_id`,
// `args_json`, ...) everywhere, in requests and in responses. 64-bit integers come
// back as strings (`ack_id`, `received_at_ms`); an unset `optional` field is
// `undefined`.

import path from 'node:path';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { REPO_ROOT } from './process.mjs';
import { waitFor, withTimeout } from './wait.mjs';

export const PROTO_DIR = path.join(REPO_ROOT, 'proto');
export const PROTO_FILE = path.join(PROTO_DIR, 'roomcast', 'v1', 'roomcast.proto');
export const { status: GrpcStatus } = grpc;

let roomcastV1;
/** The `roomcast.v1` package of the proto, as grpc-js constructors and service definitions. */
export function roomcastPackage() {
  if (!roomcastV1) {
    const definition = protoLoader.loadSync(PROTO_FILE, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [PROTO_DIR],
    });
    roomcastV1 = grpc.loadPackageDefinition(definition).roomcast.v1;
  }
  return roomcastV1;
}

function roomcastService() {
  return roomcastPackage().Roomcast;
}

/** What `EmitWithAckRequest.timeout_ms` = 0 stands for. */
const DEFAULT_ACK_TIMEOUT_MS = 5000;

/**
 * `createRoomcastClient("127.0.0.1:50051", { apiKey })` → an object with
 * `emit`, `emitStream` (an array of EmitRequests sent on one call), `joinRooms`, `leaveRooms`, `reply`, `emitWithAck`, `disconnectSockets`,
 * `fetchSockets`, `listRooms`, `getPresence`, `getDelivery`, `getInbox`,
 * `purgeInbox` (each `(request) => Promise<response>`,
 * rejecting with the grpc-js error, whose `.code` is a `GrpcStatus`),
 * `consume(request)` → an `EventConsumer` of ClientEvents, `watchPresence(request)`
 * → an `EventConsumer` of PresenceEvents, `watchConnections(request)` → an
 * `EventConsumer` of ConnectionEvents, and `close()`. Every call has a deadline of `deadlineMs`;
 * `emitWithAck` gets its request's `timeout_ms` on top, so the server's own
 * timeout always ends the wait first.
 */
export function createRoomcastClient(grpcAddr, { apiKey, deadlineMs = 5000 } = {}) {
  const Roomcast = roomcastService();
  const client = new Roomcast(grpcAddr, grpc.credentials.createInsecure());
  const metadata = () => {
    const md = new grpc.Metadata();
    if (apiKey !== undefined) md.set('authorization', `Bearer ${apiKey}`);
    return md;
  };
  const unary = (method, extraMs = () => 0) => (request) =>
    new Promise((resolve, reject) => {
      const deadline = Date.now() + deadlineMs + extraMs(request);
      client[method](request, metadata(), { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  return {
    emit: unary('Emit'),
    joinRooms: unary('JoinRooms'),
    leaveRooms: unary('LeaveRooms'),
    reply: unary('Reply'),
    emitWithAck: unary('EmitWithAck', (request) => request.timeout_ms || DEFAULT_ACK_TIMEOUT_MS),
    disconnectSockets: unary('DisconnectSockets'),
    fetchSockets: unary('FetchSockets'),
    listRooms: unary('ListRooms'),
    getPresence: unary('GetPresence'),
    getDelivery: unary('GetDelivery'),
    getInbox: unary('GetInbox'),
    purgeInbox: unary('PurgeInbox'),
    emitStream: (requests) =>
      new Promise((resolve, reject) => {
        const deadline = Date.now() + deadlineMs;
        const call = client.EmitStream(metadata(), { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
        for (const request of requests) call.write(request);
        call.end();
      }),
    consume: (request = {}) => new EventConsumer(client.ConsumeEvents(request, metadata())),
    watchPresence: (request = {}) =>
      new EventConsumer(client.WatchPresence(request, metadata()), 'WatchPresence', 'PresenceEvent'),
    watchConnections: (request = {}) =>
      new EventConsumer(client.WatchConnections(request, metadata()), 'WatchConnections', 'ConnectionEvent'),
    close: () => client.close(),
  };
}

/**
 * A server stream (ConsumeEvents by default, or WatchPresence) that collects
 * every message it receives in `events`.
 */
export class EventConsumer {
  constructor(call, rpc = 'ConsumeEvents', message = 'ClientEvent') {
    this.call = call;
    this.rpc = rpc;
    this.message = message;
    this.events = [];
    this.error = null;
    this.cancelled = false;
    // Response headers mean the server accepted the call and is subscribed.
    this.opened = new Promise((resolve, reject) => {
      call.once('metadata', resolve);
      call.once('error', reject);
    });
    this.opened.catch(() => {});
    call.on('data', (event) => this.events.push(event));
    call.on('error', (err) => {
      if (!this.cancelled) this.error = err;
    });
  }

  /** Waits until the server has answered the call with its response headers. */
  async ready(timeoutMs = 5000) {
    await withTimeout(this.opened, timeoutMs, `the ${this.rpc} stream to open`);
    return this;
  }

  /** The first received event matching `predicate`, waiting for it until the deadline. */
  next(predicate = () => true, timeoutMs = 5000, what = `a matching ${this.message}`) {
    return waitFor(
      () => {
        if (this.error) throw this.error;
        return this.events.find(predicate);
      },
      timeoutMs,
      what,
    );
  }

  matching(predicate) {
    return this.events.filter(predicate);
  }

  /** Rejects with the stream's error (e.g. UNAUTHENTICATED), or times out. */
  failure(timeoutMs = 5000) {
    return waitFor(() => this.error, timeoutMs, `the ${this.rpc} stream to fail`);
  }

  close() {
    this.cancelled = true;
    this.call.cancel();
  }
}

/** `{"_placeholder":true,"num":n}`, the reference to binary attachment n in args_json. */
export const placeholder = (num) => ({ _placeholder: true, num });
