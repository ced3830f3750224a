// Types of @roomcast/server (hand-written; the package is plain ESM JavaScript).

import type { ChannelCredentials, ChannelOptions, status as GrpcStatus } from '@grpc/grpc-js';

/** gRPC status codes, to compare with `RoomcastError.code`. */
export declare const status: typeof GrpcStatus;

/** A failed roomcast call: the gRPC `code` and the server's message. */
export declare class RoomcastError extends Error {
  readonly method: string;
  readonly code: number;
  readonly details: string | undefined;
}

/** One selected socket's answer to `emitWithAckResults` / `emitWithAck`. */
export interface AckResult {
  socketId: string;
  nodeId: string;
  acked: boolean;
  /** The ack callback's arguments (binary as Buffer); empty when not acked. */
  args: unknown[];
}

/** `emitWithAck` when some selected socket did not answer within the timeout. */
export declare class AckTimeoutError extends Error {
  /** The first ack argument of every socket that answered. */
  readonly responses: unknown[];
  readonly results: AckResult[];
}

export interface Handshake {
  /** The CONNECT `auth` object without its `token`; undefined for a socket looked up with FetchSockets. */
  auth: Record<string, unknown> | undefined;
  query: Record<string, string>;
  headers: Record<string, string>;
  address: string;
  transport: string;
  /** Unix time in milliseconds of the connect. */
  issued: number;
  time?: string;
}

export interface ReliableOptions {
  /** How long the message may wait for its ack, in milliseconds (required). */
  ttlMs: number;
}

export type Rooms = string | string[] | Set<string>;

/** The sockets a call applies to, as Socket.IO's BroadcastOperator. Every method returns a new operator. */
export declare class BroadcastOperator {
  to(room: Rooms): BroadcastOperator;
  in(room: Rooms): BroadcastOperator;
  except(room: Rooms): BroadcastOperator;
  toUser(userId: string | string[]): BroadcastOperator;
  toSocket(socketId: string | string[]): BroadcastOperator;
  readonly volatile: BroadcastOperator;
  timeout(ms: number): BroadcastOperator;
  emit(event: string, ...args: unknown[]): Promise<void>;
  /** At-least-once: the last argument is `{ ttlMs }`; resolves to the message id. Only with `toUser`/`toSocket`. */
  emitReliable(event: string, ...argsAndOptions: [...unknown[], ReliableOptions]): Promise<string>;
  /** Resolves to each socket's first ack argument; rejects with AckTimeoutError when one is missing. */
  emitWithAck(event: string, ...args: unknown[]): Promise<unknown[]>;
  emitWithAckResults(event: string, ...args: unknown[]): Promise<AckResult[]>;
  fetchSockets(): Promise<RemoteSocket[]>;
  socketsJoin(room: Rooms): Promise<void>;
  socketsLeave(room: Rooms): Promise<void>;
  /** Resolves to how many sockets were disconnected. */
  disconnectSockets(close?: boolean): Promise<number>;
}

/** A socket as `fetchSockets()` describes it. */
export declare class RemoteSocket {
  readonly id: string;
  readonly userId: string | undefined;
  readonly namespace: string;
  readonly nodeId: string;
  readonly rooms: Set<string>;
  readonly data: unknown;
  readonly connectedAt: number;
  readonly handshake: Handshake;
  emit(event: string, ...args: unknown[]): Promise<void>;
  join(room: Rooms): Promise<void>;
  leave(room: Rooms): Promise<void>;
  disconnect(close?: boolean): Promise<number>;
}

/** The last argument of a client event sent with an ack callback. */
export type Ack = (...args: unknown[]) => void;

/** A socket handed to `on("connection")`. */
export declare class ServerSocket {
  readonly id: string;
  readonly userId: string | undefined;
  readonly nodeId: string;
  readonly namespace: string;
  /** The rooms as known here: at connect, then changed by this object's join/leave. */
  readonly rooms: Set<string>;
  readonly handshake: Handshake;
  /** The connect hook's data; free to change (kept in this process only). */
  data: any;
  readonly recovered: boolean;
  readonly connected: boolean;
  on(event: 'disconnect', listener: (reason: string) => void): this;
  /** A client event; when the client passed an ack callback, the last argument is an `Ack`. */
  on(event: string, listener: (...args: any[]) => unknown): this;
  once(event: string, listener: (...args: any[]) => unknown): this;
  off(event: string, listener?: (...args: any[]) => unknown): this;
  emit(event: string, ...args: unknown[]): Promise<void>;
  emitWithAck(event: string, ...args: unknown[]): Promise<unknown>;
  timeout(ms: number): { emitWithAck(event: string, ...args: unknown[]): Promise<unknown> };
  /** Sockets of a room, this one left out (Socket.IO's `socket.to(room)`). */
  to(room: Rooms): BroadcastOperator;
  in(room: Rooms): BroadcastOperator;
  readonly broadcast: BroadcastOperator;
  join(room: Rooms): Promise<void>;
  leave(room: Rooms): Promise<void>;
  disconnect(close?: boolean): Promise<this>;
}

export interface UserStatus {
  userId: string;
  status: 'online' | 'offline';
  lastSeen: number;
  rooms: string[];
}

export interface ReconnectInfo {
  /** "connections", "events" or "presence". */
  stream: string;
  namespace: string;
}

export declare class Namespace {
  readonly name: string;
  to(room: Rooms): BroadcastOperator;
  in(room: Rooms): BroadcastOperator;
  except(room: Rooms): BroadcastOperator;
  toUser(userId: string | string[]): BroadcastOperator;
  toSocket(socketId: string | string[]): BroadcastOperator;
  timeout(ms: number): BroadcastOperator;
  readonly volatile: BroadcastOperator;
  emit(event: string, ...args: unknown[]): Promise<void>;
  emitWithAck(event: string, ...args: unknown[]): Promise<unknown[]>;
  fetchSockets(): Promise<RemoteSocket[]>;
  socketsJoin(room: Rooms): Promise<void>;
  socketsLeave(room: Rooms): Promise<void>;
  disconnectSockets(close?: boolean): Promise<number>;
  /** Rooms with members → member count. */
  rooms(): Promise<Map<string, number>>;
  of(name: string): Namespace;
  on(event: 'connection', listener: (socket: ServerSocket) => unknown): this;
  on(event: 'user-status', listener: (status: UserStatus) => unknown): this;
  on(event: 'reconnect', listener: (info: ReconnectInfo) => unknown): this;
  on(event: 'error', listener: (err: Error) => unknown): this;
  off(event: string, listener?: (...args: any[]) => unknown): this;
  listenerCount(event: string): number;
  /** Resolves once the streams opened by the listeners so far are live. */
  ready(): Promise<this>;
}

export interface RoomcastOptions {
  /** "host:port" of the gRPC API (a control plane, or standalone). */
  address: string;
  apiKey?: string;
  /** The default namespace ("/"). */
  namespace?: string;
  /** Consumer group of the "connection" streams: replicas with the same group share sockets. */
  group?: string;
  /** TLS; insecure by default. */
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
  /** Deadline of each call (10000). */
  deadlineMs?: number;
  /** Default timeout of a ServerSocket's emitWithAck (5000). */
  ackTimeoutMs?: number;
  backoff?: { initialDelayMs?: number; maxDelayMs?: number };
  /** With a group: how often sockets known here are checked for a disconnect another replica got (30000). */
  sweepMs?: number;
}

/** The disconnect reason of a socket found gone without its disconnect event having come here. */
export declare const MISSED_DISCONNECT: string;

export interface Presence {
  userId: string;
  online: boolean;
  lastSeen: number;
  sockets: number;
}

export type DeliveryStatus = 'pending' | 'acked' | 'expired' | 'purged' | 'unspecified';

export interface Delivery {
  messageId: string;
  namespace: string;
  event: string;
  status: DeliveryStatus;
  createdAt: number;
  expiresAt: number;
  recipients: { userId?: string; socketId?: string; status: DeliveryStatus; doneAt: number }[];
}

export interface InboxEntry {
  messageId: string;
  event: string;
  args: unknown[];
  createdAt: number;
  expiresAt: number;
}

export declare class Roomcast extends Namespace {
  constructor(options: RoomcastOptions);
  presence(userIds: string | string[]): Promise<Presence[]>;
  roomPresence(room: string, namespace?: string): Promise<{ userIds: string[]; sockets: RemoteSocket[] }>;
  delivery(messageId: string): Promise<Delivery>;
  inbox(userId: string, namespace?: string): Promise<InboxEntry[]>;
  purgeInbox(userId: string, namespace?: string): Promise<number>;
  close(): void;
}

export declare function encodeArgs(args: unknown[]): { args_json: string; attachments: Buffer[] };
export declare function decodeArgs(argsJson: string, attachments?: Uint8Array[]): unknown[];

export default Roomcast;
