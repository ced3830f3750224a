// At-least-once emits and the per-user offline inbox, as a backend and the
// official socket.io-client see them: resends until the client's ack, the id
// that lets the client drop duplicates, an offline user's messages delivered
// in order when it connects, GetDelivery/GetInbox/PurgeInbox, and the errors.
// Runs against `roomcast standalone`, or (ROOMCAST_E2E_TARGET=cluster) three
// edges and a control plane over NATS; the cluster-only part kills an edge and
// a control plane mid-delivery.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  claims,
  createRoomcastClient,
  GrpcStatus,
  runCli,
  signHs256,
  SocketPool,
  startCluster,
  startTarget,
  targetKind,
  waitConnected,
  waitFor,
} from './lib/index.mjs';

const SECRET = 'e2e-delivery-hs256-secret-with-enough-bytes-01';
const API_KEY = 'e2e-delivery-key';
const TARGET = targetKind();
const RESEND_MS = 300;
const MAX_RESEND_MS = 600;
const DELIVERY_ARGS = [
  '--delivery-resend-ms', String(RESEND_MS),
  '--delivery-max-resend-ms', String(MAX_RESEND_MS),
];
/** A quiet window that proves "never again": longer than two of the longest resend waits. */
const QUIET_MS = 2 * MAX_RESEND_MS + 300;

let counter = 0;
const uid = (name) => `${name}-${process.pid}-${++counter}`;
const asUser = (sub) => ({ auth: { token: signHs256(claims(sub), SECRET) } });

/**
 * Listens to `event` as the documented client pattern does: the last argument
 * is the ack callback, the one before it `{ messageId }`. Records every
 * delivery (duplicates too) and, after ignoring the first `ignore` ones (or
 * while `hold()` is true), calls `ack()`.
 */
function listen(client, event, { ignore = 0, hold = () => false } = {}) {
  const deliveries = [];
  const handled = new Set();
  const firstSeen = [];
  client.socket.on(event, (...args) => {
    const ack = args.pop();
    const { messageId } = args.pop();
    deliveries.push({ messageId, args });
    if (!handled.has(messageId)) {
      handled.add(messageId);
      firstSeen.push({ messageId, args });
    }
    if (deliveries.length <= ignore || hold()) return;
    ack();
  });
  return { deliveries, firstSeen, count: (id) => deliveries.filter((d) => d.messageId === id).length };
}

/** Polls `bad` for `ms`; fails as soon as it holds (a bounded quiet window). */
async function staysFalse(bad, ms, what) {
  const until = Date.now() + ms;
  await waitFor(
    async () => {
      if (await bad()) throw new Error(`unexpected: ${what}`);
      return Date.now() >= until;
    },
    ms + 5000,
    `a quiet window of ${ms}ms`,
    25,
  );
}

const STATUS = (s) => `DELIVERY_STATUS_${s}`;

async function waitStatus(api, messageId, status, timeoutMs = 15_000) {
  let last;
  await waitFor(
    async () => {
      last = await api.getDelivery({ message_id: messageId });
      return last.status === STATUS(status);
    },
    timeoutMs,
    `message ${messageId} to be ${status} (last: ${last?.status})`,
    25,
  );
  return last;
}

function acked(api, { user, event = 'note', args = [], ttl = 20_000, namespace = '/' }) {
  return api.emit({
    to: { namespace, user_ids: [user] },
    event,
    args_json: JSON.stringify(args),
    at_least_once: true,
    ttl_ms: ttl,
  });
}

/** Connects `user` at the `edge`-th URL with a listener set before the CONNECT. */
async function connectListening(pool, edge, user, event, opts) {
  const client = pool.openAt(edge, '/', asUser(user));
  const got = listen(client, event, opts);
  await waitConnected(client.socket);
  return { client, got };
}

/**
 * Waits until presence, as `api` reads it, has `user` online: edges record a
 * connect on their own time, and an acked emit goes only to users presence knows.
 */
function waitOnline(api, user) {
  return waitFor(
    async () => (await api.getPresence({ user_ids: [user] })).users[0].online,
    5000,
    `${user} online`,
  );
}

/** Makes a user known (seen once by presence), then leaves it with no socket. */
async function knownOffline(api, pool, user) {
  const c = await pool.connectAt(0, '/', asUser(user));
  await waitOnline(api, user);
  c.socket.close();
  await waitFor(
    async () => (await api.getPresence({ user_ids: [user] })).users[0].sockets === 0,
    5000,
    `${user} with no socket`,
  );
}

describe(`at-least-once delivery against roomcast ${TARGET}`, { timeout: 240_000 }, () => {
  let server;
  let api;
  let pool;

  before(async () => {
    server = await startTarget([
      '--jwt-secret', SECRET,
      '--api-key', API_KEY,
      '--presence-grace-ms', '0',
      ...DELIVERY_ARGS,
    ]);
    api = createRoomcastClient(server.grpcAddr, { apiKey: API_KEY });
    pool = new SocketPool(server.httpUrls);
  });
  afterEach(() => pool.closeAll());
  after(async () => {
    pool?.closeAll();
    api?.close();
    await server?.stop();
  });

  it('is resent with the same id while the client does not ack, and never again once it does', async () => {
    const user = uid('resend');
    const { got } = await connectListening(pool, 1, user, 'note', { ignore: 2 });
    await waitOnline(api, user);
    const { message_id: id } = await acked(api, { user, args: [{ text: 'hi' }, 7] });
    assert.match(id, /^m[0-9a-f]{32}$/);

    const status = await waitStatus(api, id, 'ACKED');
    assert.equal(got.count(id), 3, 'two ignored deliveries, then the acked one');
    for (const d of got.deliveries) {
      assert.deepEqual(d.args, [{ text: 'hi' }, 7], 'the emit\'s own arguments before { messageId }');
    }
    assert.equal(status.recipients.length, 1);
    assert.equal(status.recipients[0].user_id, user);
    assert.equal(status.recipients[0].status, STATUS('ACKED'));
    assert.ok(Number(status.recipients[0].done_at_ms) >= Number(status.created_at_ms));

    await staysFalse(() => got.count(id) > 3, QUIET_MS, 'a resend after the ack');
    // A later message still flows: the queue did not stick on the first.
    const { message_id: next } = await acked(api, { user, args: ['next'] });
    await waitStatus(api, next, 'ACKED');
    assert.equal(got.count(id), 3);
    assert.equal(got.count(next), 1);
  });

  it('keeps an offline user\'s messages and delivers all of them in order when it connects; a reconnect after the acks gets nothing again', async () => {
    const user = uid('inbox');
    await knownOffline(api, pool, user);
    const ids = [];
    for (let i = 0; i < 10; i++) ids.push((await acked(api, { user, args: [i] })).message_id);

    const inbox = await api.getInbox({ user_id: user });
    assert.deepEqual(inbox.entries.map((e) => e.message_id), ids, 'GetInbox lists them in emit order');
    assert.deepEqual(inbox.entries.map((e) => JSON.parse(e.args_json)), ids.map((_, i) => [i]));
    for (const id of ids) assert.equal((await api.getDelivery({ message_id: id })).status, STATUS('PENDING'));

    const first = await connectListening(pool, 2, user, 'note');
    for (const id of ids) await waitStatus(api, id, 'ACKED');
    assert.deepEqual(first.got.firstSeen.map((d) => d.messageId), ids, 'delivered in emit order');
    assert.deepEqual(first.got.firstSeen.map((d) => d.args), ids.map((_, i) => [i]));
    await waitFor(async () => (await api.getInbox({ user_id: user })).entries.length === 0, 5000, 'an empty inbox');
    first.client.socket.close();

    const again = await connectListening(pool, 0, user, 'note');
    await staysFalse(() => again.got.deliveries.length > 0, QUIET_MS, 'an acked message delivered again');
    const { message_id: fresh } = await acked(api, { user, args: ['fresh'] });
    await waitStatus(api, fresh, 'ACKED');
    assert.deepEqual(again.got.deliveries.map((d) => d.messageId), [fresh], 'only the new message');
  });

  it('expires a message whose ttl passes before any ack, and PurgeInbox drops what waits', async () => {
    const user = uid('expire');
    await knownOffline(api, pool, user);
    const { message_id: short } = await acked(api, { user, ttl: 400, args: ['short'] });
    const status = await waitStatus(api, short, 'EXPIRED', 5000);
    assert.equal(status.recipients[0].status, STATUS('EXPIRED'));
    assert.deepEqual((await api.getInbox({ user_id: user })).entries, []);

    const { message_id: purged } = await acked(api, { user, args: ['purged'] });
    assert.equal((await api.purgeInbox({ user_id: user })).purged, 1);
    assert.equal((await api.getDelivery({ message_id: purged })).status, STATUS('PURGED'));

    const back = await connectListening(pool, 1, user, 'note');
    const { message_id: live } = await acked(api, { user, args: ['live'] });
    await waitStatus(api, live, 'ACKED');
    assert.deepEqual(back.got.deliveries.map((d) => d.messageId), [live], 'neither the expired nor the purged one');
  });

  it('a user never seen before gets what was sent before its first connect, in order, once', async () => {
    const user = uid('newcomer');
    const first = await acked(api, { user, args: ['welcome'] });
    const second = await acked(api, { user, args: ['tour'] });
    assert.match(first.message_id, /^m/);
    assert.equal((await api.getInbox({ user_id: user })).entries.length, 2, 'both wait in the inbox');
    const { got } = await connectListening(pool, 0, user, 'note');
    await waitStatus(api, first.message_id, 'ACKED');
    await waitStatus(api, second.message_id, 'ACKED');
    assert.deepEqual(got.firstSeen.map((d) => d.args), [['welcome'], ['tour']]);
  });

  it('answers bad requests with clear errors', async () => {
    const user = uid('bad');
    await knownOffline(api, pool, user);
    const fails = async (request, code, pattern) => {
      await assert.rejects(api.emit(request), (err) => {
        assert.equal(err.code, code, err.message);
        assert.match(err.details, pattern);
        return true;
      });
    };
    const base = { event: 'note', args_json: '[]', at_least_once: true, ttl_ms: 1000 };
    await fails({ ...base, to: { user_ids: [user] }, ttl_ms: 0 }, GrpcStatus.INVALID_ARGUMENT, /ttl_ms must be 1 to/);
    await fails({ ...base, to: { user_ids: [user] }, ttl_ms: 4_000_000_000 }, GrpcStatus.INVALID_ARGUMENT, /ttl_ms must be 1 to/);
    await fails({ ...base, to: { rooms: ['lobby'] } }, GrpcStatus.INVALID_ARGUMENT, /user_ids and socket_ids only/);
    await fails({ ...base, to: { user_ids: [user], except_rooms: ['x'] } }, GrpcStatus.INVALID_ARGUMENT, /user_ids and socket_ids only/);
    await fails({ ...base, to: {} }, GrpcStatus.INVALID_ARGUMENT, /needs user_ids or socket_ids/);
    await fails({ ...base, to: { user_ids: [user] }, volatile: true }, GrpcStatus.INVALID_ARGUMENT, /volatile/);
    await fails({ ...base, to: { user_ids: [user] }, event: 'connect' }, GrpcStatus.INVALID_ARGUMENT, /reserved/);
    await fails({ ...base, to: { user_ids: [user] }, args_json: '{}' }, GrpcStatus.INVALID_ARGUMENT, /json array/);
    await fails({ to: { user_ids: [user] }, event: 'note', ttl_ms: 1000 }, GrpcStatus.INVALID_ARGUMENT, /ttl_ms needs at_least_once/);
    await assert.rejects(api.getDelivery({ message_id: 'm-nope' }), (err) => err.code === GrpcStatus.NOT_FOUND);
    await assert.rejects(api.getInbox({}), (err) => err.code === GrpcStatus.INVALID_ARGUMENT);
    await assert.rejects(
      api.getInbox({ user_id: user, socket_id: 'x' }),
      (err) => err.code === GrpcStatus.INVALID_ARGUMENT,
    );
    assert.deepEqual((await api.getInbox({ user_id: user })).entries, [], 'nothing accepted');
  });

  it('the CLI emits at least once, shows the inbox and the status, and purges', async () => {
    const user = uid('cli');
    await knownOffline(api, pool, user);
    const cli = (args) => runCli(args, { grpcAddr: server.grpcAddr, apiKey: API_KEY });
    const emitted = await cli(['emit', 'note', '["from-cli"]', '-u', user, '--at-least-once-ttl-ms', '60000']);
    assert.equal(emitted.code, 0, emitted.stderr);
    const id = emitted.json.message_id;
    assert.match(id, /^m[0-9a-f]{32}$/);
    const inbox = await cli(['inbox', '-u', user]);
    assert.deepEqual(inbox.json.entries.map((e) => [e.message_id, e.event, e.args]), [[id, 'note', ['from-cli']]]);
    const status = await cli(['delivery', id]);
    assert.equal(status.json.status, 'pending');
    assert.deepEqual(status.json.recipients.map((r) => [r.user_id, r.status]), [[user, 'pending']]);
    const purged = await cli(['inbox', '-u', user, '--purge']);
    assert.equal(purged.json.purged, 1);
    assert.equal((await cli(['delivery', id])).json.status, 'purged');
    const refused = await cli(['emit', 'note', '[]', '-r', 'lobby', '--at-least-once-ttl-ms', '1000']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /InvalidArgument|invalid argument/i);
  });

  it('an explicit socket id gets its message resent until that socket acks', async () => {
    const user = uid('sock');
    const { client, got } = await connectListening(pool, 0, user, 'note', { ignore: 1 });
    const { message_id: id } = await api.emit({
      to: { socket_ids: [client.id] },
      event: 'note',
      args_json: '["to-socket"]',
      at_least_once: true,
      ttl_ms: 20_000,
    });
    const status = await waitStatus(api, id, 'ACKED');
    assert.equal(status.recipients[0].socket_id, client.id);
    assert.equal(got.count(id), 2);
  });
});

describe('at-least-once delivery in a cluster: an edge and a control plane die mid-delivery', {
  timeout: 240_000,
  skip: TARGET === 'cluster' ? false : 'needs ROOMCAST_E2E_TARGET=cluster',
}, () => {
  const LEASE_MS = 1500;
  let server;
  let apis;
  let pool;

  before(async () => {
    server = await startCluster({
      natsNodes: 1,
      edges: 2,
      controls: 2,
      edgeArgs: ['--jwt-secret', SECRET, '--presence-grace-ms', '0', '--edge-ttl-ms', '3000'],
      controlArgs: ['--presence-grace-ms', '0', ...DELIVERY_ARGS, '--delivery-lease-ttl-ms', String(LEASE_MS)],
    });
    apis = server.controls.map((c) => createRoomcastClient(c.grpcAddr));
    pool = new SocketPool(server.httpUrls);
  });
  afterEach(() => pool.closeAll());
  after(async () => {
    pool?.closeAll();
    for (const api of apis ?? []) api.close();
    await server?.stop();
  });

  it('messages not acked on a killed edge are delivered, in order, through the other edge once the client is back there', async () => {
    const user = uid('edge-crash');
    const [api] = apis;
    let holding = true;
    const onA = await connectListening(pool, 0, user, 'note', { hold: () => holding });
    await waitOnline(api, user);
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await acked(api, { user, args: [i] })).message_id);
    await waitFor(() => onA.got.count(ids[0]) >= 1, 5000, 'the first message on edge 1');

    await server.edges[0].kill();
    holding = false;
    const onB = await connectListening(pool, 1, user, 'note');
    for (const id of ids) await waitStatus(api, id, 'ACKED', 30_000);
    assert.deepEqual(onB.got.firstSeen.map((d) => d.messageId), ids, 'every message, in order, on edge 2');
    assert.equal(onA.got.deliveries.filter((d) => d.messageId !== ids[0]).length, 0,
      'edge 1 only ever had the head of the queue');
  });

  it('a queue whose control plane was killed is taken over by the other one, which resends until the ack', async () => {
    const user = uid('control-crash');
    let holding = true;
    const { got } = await connectListening(pool, 1, user, 'note', { hold: () => holding });
    await waitOnline(apis[0], user);
    const { message_id: id } = await acked(apis[0], { user, args: ['survives'] });
    await waitFor(() => got.count(id) >= 1, 5000, 'a first delivery by control-1');
    await server.controls[0].kill();
    holding = false;
    const status = await waitStatus(apis[1], id, 'ACKED', 20_000);
    assert.equal(status.recipients[0].status, STATUS('ACKED'));
    const resends = got.count(id);
    assert.ok(resends >= 2, `resent after the takeover (${resends} deliveries)`);
    await staysFalse(() => got.count(id) > resends, QUIET_MS, 'a resend after the ack');
  });
});
