// A backend on NATS instead of gRPC: in a cluster every client→server event is
// published on `rc.<cluster>.in.<namespace>.<event>` with its routing in headers,
// and a client's ack is answered with a plain NATS reply. The backend here is the
// official `nats` client; the clients are socket.io-client sockets spread over
// three edges. Always starts its own cluster (1 nats-server, 3 edges, 1 control).

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { connect, headers as natsHeaders } from 'nats';
import {
  SocketPool,
  bytesOf,
  claims,
  createRoomcastClient,
  eventSubject,
  placeholder,
  signHs256,
  startCluster,
  subjectToken,
  subjectUntoken,
  waitFor,
} from './lib/index.mjs';

const SECRET = 'e2e-nats-backend-hs256-secret-0123456789';
const EDGE_ARGS = ['--namespace', '/', '--namespace', '/admin', '--jwt-secret', SECRET, '--allow-anonymous'];

const asUser = (sub, opts = {}) => ({ auth: { token: signHs256(claims(sub), SECRET) }, ...opts });
const text = (data) => Buffer.from(data).toString();

/** A NATS subscription that keeps every message it receives (and may answer it). */
class Inbox {
  constructor(nc, subject, { onMessage, ...opts } = {}) {
    this.nc = nc;
    this.messages = [];
    this.error = null;
    this.sub = nc.subscribe(subject, opts);
    (async () => {
      for await (const msg of this.sub) {
        this.messages.push(msg);
        onMessage?.(msg);
      }
    })().catch((err) => {
      this.error = err;
    });
  }

  /** Resolves once the server has registered the subscription. */
  async ready() {
    await this.nc.flush();
    return this;
  }

  next(predicate = () => true, timeoutMs = 5000, what = 'a NATS message') {
    return waitFor(
      () => {
        if (this.error) throw this.error;
        return this.messages.find(predicate);
      },
      timeoutMs,
      what,
    );
  }

  unsubscribe() {
    this.sub.unsubscribe();
  }
}

/** The value of header `name`, or undefined when the message has none. */
function header(msg, name) {
  return msg.headers?.has(name) ? msg.headers.get(name) : undefined;
}

/** The message's socket id (header `rc-sock`, unescaped). */
const socketOf = (msg) => subjectUntoken(header(msg, 'rc-sock'));

/** Text followed by attachments, with the `rc-parts` header listing their lengths. */
function withParts(json, attachments) {
  const parts = [Buffer.from(json), ...attachments];
  const h = natsHeaders();
  h.set('rc-parts', parts.map((p) => p.length).join(','));
  return { data: Buffer.concat(parts), headers: h };
}

describe('NATS backend: client events on rc.<cluster>.in.*, acks as NATS replies', { timeout: 180_000 }, () => {
  let cluster;
  let api;
  let pool;
  let nc;
  const inboxes = [];
  const connections = [];

  const subject = (event, namespace = '/') => eventSubject(event, { namespace, cluster: cluster.cluster });
  const inbox = async (conn, event, opts = {}, namespace = '/') => {
    const box = await new Inbox(conn, subject(event, namespace), opts).ready();
    inboxes.push(box);
    return box;
  };
  const natsConnection = async (name) => {
    const conn = await connect({ servers: cluster.nats.urls, name });
    connections.push(conn);
    return conn;
  };
  const edgeOf = (client) => cluster.edges.find((e) => e.httpUrl === client.httpUrl);

  before(async () => {
    cluster = await startCluster({ natsNodes: 1, edges: 3, controls: 1, edgeArgs: EDGE_ARGS });
    api = createRoomcastClient(cluster.grpcAddr);
    pool = new SocketPool(cluster.httpUrls);
    nc = await natsConnection('e2e-backend');
  });

  afterEach(() => {
    pool.closeAll();
    for (const box of inboxes.splice(0)) box.unsubscribe();
  });

  after(async () => {
    pool?.closeAll();
    for (const conn of connections) await conn.close();
    api?.close();
    await cluster?.stop();
  });

  it('an event arrives on its subject with escaped routing headers and its args as the payload', async () => {
    const events = await inbox(nc, 'chat.message', { queue: 'backend' });
    const client = await pool.connectAt(1, '/', asUser('ann.lee@example.com'));
    const before = Date.now();
    client.socket.emit('chat.message', { text: 'hi ü' }, 42);

    const msg = await events.next((m) => socketOf(m) === client.id);
    assert.equal(msg.subject, 'rc.roomcast.in.~2F.chat~2Emessage');
    assert.equal(header(msg, 'rc-ns'), '~2F');
    assert.equal(header(msg, 'rc-sock'), subjectToken(client.id));
    assert.equal(header(msg, 'rc-user'), 'ann~2Elee~40example~2Ecom');
    assert.equal(header(msg, 'rc-event'), 'chat~2Emessage');
    assert.equal(subjectUntoken(header(msg, 'rc-reply')), `rc.roomcast.node.${edgeOf(client).nodeId}`);
    const at = Number(header(msg, 'rc-at'));
    assert.match(header(msg, 'rc-at'), /^\d+$/);
    assert.ok(at >= before - 1000 && at <= Date.now() + 1000, `rc-at ${at}`);
    assert.equal(header(msg, 'rc-ack'), undefined, 'no ack id without an ack callback');
    assert.equal(header(msg, 'rc-parts'), undefined, 'no parts without attachments');
    assert.ok(!msg.reply, `no reply subject without an ack callback, got ${msg.reply}`);
    assert.deepEqual(JSON.parse(text(msg.data)), [{ text: 'hi ü' }, 42]);
  });

  it('an anonymous socket of /admin: namespace in the subject, empty user as "~"', async () => {
    const events = await inbox(nc, 'ping', {}, '/admin');
    const rootEvents = await inbox(nc, 'ping');
    const client = await pool.connectAt(2, '/admin');
    const rootClient = await pool.connectAt(0, '/', asUser('root-user'));
    client.socket.emit('ping');
    rootClient.socket.emit('ping', 'root');

    const msg = await events.next((m) => socketOf(m) === client.id);
    assert.equal(msg.subject, 'rc.roomcast.in.~2Fadmin.ping');
    assert.equal(header(msg, 'rc-ns'), '~2Fadmin');
    assert.equal(header(msg, 'rc-user'), '~');
    assert.equal(header(msg, 'rc-event'), 'ping');
    assert.deepEqual(JSON.parse(text(msg.data)), []);

    const rootMsg = await rootEvents.next((m) => socketOf(m) === rootClient.id);
    assert.equal(header(rootMsg, 'rc-ns'), '~2F');
    assert.equal(events.messages.filter((m) => socketOf(m) === rootClient.id).length, 0);
  });

  it("a NATS reply answers the client's ack callback; an empty body means no arguments", async () => {
    const events = await inbox(nc, 'order', { queue: 'backend' });
    for (const [edge, transports] of [[0, ['websocket']], [1, ['polling']]]) {
      const client = await pool.connectAt(edge, '/', asUser('buyer', { transports }));

      const first = client.emitWithAckArgs('order', { sku: 'A-1' }, 2);
      const msg = await events.next((m) => socketOf(m) === client.id);
      assert.ok(msg.reply, 'the message carries a reply subject');
      assert.match(header(msg, 'rc-ack'), /^\d+$/);
      assert.deepEqual(JSON.parse(text(msg.data)), [{ sku: 'A-1' }, 2]);
      msg.respond(Buffer.from(JSON.stringify(['accepted', { id: 7 }])));
      assert.deepEqual(await first, ['accepted', { id: 7 }]);

      const second = client.emitWithAckArgs('order', 'again');
      const msg2 = await events.next((m) => socketOf(m) === client.id && m !== msg);
      assert.notEqual(header(msg2, 'rc-ack'), header(msg, 'rc-ack'), 'each ack has its own id');
      msg2.respond();
      assert.deepEqual(await second, []);
    }
  });

  it('binary both ways: rc-parts on the event, and an ack reply with attachments', async () => {
    const events = await inbox(nc, 'upload', { queue: 'backend' });
    const client = await pool.connectAt(2, '/', asUser('uploader'));
    const first = Buffer.from([0, 1, 2, 253, 254, 255]);
    const second = Buffer.from('second part');
    const acked = client.emitWithAckArgs('upload', 'doc', first, { part: second });

    const msg = await events.next((m) => socketOf(m) === client.id);
    const parts = header(msg, 'rc-parts');
    assert.match(parts, /^\d+,\d+,\d+$/);
    const [textLen, firstLen, secondLen] = parts.split(',').map(Number);
    assert.equal(firstLen, first.length);
    assert.equal(secondLen, second.length);
    assert.equal(msg.data.length, textLen + firstLen + secondLen);
    const payload = Buffer.from(msg.data);
    assert.deepEqual(JSON.parse(payload.subarray(0, textLen).toString()), [
      'doc',
      placeholder(0),
      { part: placeholder(1) },
    ]);
    assert.deepEqual(payload.subarray(textLen, textLen + firstLen), first);
    assert.deepEqual(payload.subarray(textLen + firstLen), second);

    const photo = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));
    const { data, headers } = withParts(JSON.stringify(['stored', { thumb: placeholder(0) }]), [photo]);
    msg.respond(data, { headers });
    const [status, { thumb }] = await acked;
    assert.equal(status, 'stored');
    assert.deepEqual(bytesOf(thumb), photo);
  });

  it('an invalid reply is ignored: the ack does not fire and the connection lives on', async () => {
    const events = await inbox(nc, 'check', { queue: 'backend' });
    const client = await pool.connectAt(0, '/', asUser('checker'));
    const disconnects = [];
    client.socket.on('disconnect', (reason) => disconnects.push(reason));

    const answered = [];
    const invalid = [
      ['a JSON object', { data: Buffer.from('{"not":"an array"}') }],
      ['text that is not JSON', { data: Buffer.from('not json at all') }],
      ['a JSON string', { data: Buffer.from('"just a string"') }],
      ['rc-parts that do not add up', withParts('["x",{"_placeholder":true,"num":0}]', [Buffer.from('abc')])],
    ];
    invalid[3][1].headers.set('rc-parts', '5,100');
    for (const [i, [, reply]] of invalid.entries()) {
      client.socket.emit('check', i, (...ackArgs) => answered.push([i, ackArgs]));
      const msg = await events.next((m) => socketOf(m) === client.id && JSON.parse(text(m.data))[0] === i);
      msg.respond(reply.data, reply.headers ? { headers: reply.headers } : undefined);
    }
    // A valid answer sent after the invalid ones arrives: they were handled first, and dropped.
    const valid = client.emitWithAckArgs('check', 'last');
    const lastMsg = await events.next((m) => socketOf(m) === client.id && JSON.parse(text(m.data))[0] === 'last');
    lastMsg.respond(Buffer.from('["fine"]'));
    assert.deepEqual(await valid, ['fine']);

    assert.deepEqual(answered, [], `invalid replies reached ack callbacks: ${JSON.stringify(answered)}`);
    assert.deepEqual(disconnects, []);
    assert.equal(client.socket.connected, true);
    await api.emit({ to: { socket_ids: [client.id] }, event: 'still-there', args_json: '[1]' });
    assert.deepEqual(await client.nextEvent('still-there'), [1]);
  });

  it('subscribers in one queue group share the events, each handled once, and answer their acks', async () => {
    const workers = [await natsConnection('e2e-worker-1'), await natsConnection('e2e-worker-2')];
    // Each worker answers every job it gets with its name and the job.
    const queue = await Promise.all(
      workers.map((w, i) =>
        inbox(w, 'job', {
          queue: 'workers',
          onMessage: (msg) => {
            const [job] = JSON.parse(text(msg.data));
            msg.respond(Buffer.from(JSON.stringify([`worker-${i + 1}`, job])));
          },
        }),
      ),
    );
    const audit = await inbox(nc, 'job');
    const clients = [
      await pool.connectAt(0, '/', asUser('producer-0')),
      await pool.connectAt(1, '/', asUser('producer-1')),
      await pool.connectAt(2, '/', asUser('producer-2')),
    ];
    const total = 30;
    const acks = await Promise.all(
      Array.from({ length: total }, (_, i) => clients[i % clients.length].emitWithAckArgs('job', i)),
    );
    for (const [i, [worker, job]] of acks.entries()) {
      assert.match(worker, /^worker-[12]$/);
      assert.equal(job, i);
    }

    await audit.next(() => audit.messages.length >= total, 5000, 'the ungrouped subscriber to see every job');
    // Whatever nats-server routed to the workers has reached them after a round trip.
    await Promise.all(workers.map((w) => w.flush()));
    const handled = queue.flatMap((box) => box.messages);
    assert.equal(handled.length, total, 'each job went to exactly one worker');
    for (const [i, box] of queue.entries()) assert.ok(box.messages.length > 0, `worker-${i + 1} got no job`);
    const keys = handled.map((m) => `${socketOf(m)}/${header(m, 'rc-ack')}`);
    assert.equal(new Set(keys).size, total);
    assert.deepEqual(
      handled.map((m) => JSON.parse(text(m.data))[0]).sort((a, b) => a - b),
      Array.from({ length: total }, (_, i) => i),
    );
    assert.equal(audit.messages.length, total);
  });
});
