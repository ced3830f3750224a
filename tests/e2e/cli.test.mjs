// The command line (`roomcast emit | sockets | rooms | join | leave | disconnect`)
// against a running target while real socket.io-client sockets are connected:
// one `roomcast standalone`, or, with ROOMCAST_E2E_TARGET=cluster, a control plane
// in front of three edges. Output is read with --json.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  claims,
  runCli,
  settle,
  signHs256,
  targetKind,
  useApiTarget,
  waitFor,
} from './lib/index.mjs';

const SECRET = 'e2e-cli-hs256-secret-with-enough-bytes-01';
const API_KEY = 'e2e-cli-api-key';
const TARGET = targetKind();
const NAMESPACES = ['/', '/admin'];

const sorted = (list) => [...list].sort();
const ids = (clients) => sorted(clients.map((c) => c.id));

describe(`roomcast CLI against roomcast ${TARGET}`, { timeout: 180_000 }, () => {
  let server;
  let api;
  let pool;

  const asUser = (sub, rooms = [], opts = {}) => ({
    auth: { token: signHs256(claims(sub, { rooms }), SECRET) },
    ...opts,
  });
  const connectAt = (edge, sub, rooms, namespace = '/') => pool.connectAt(edge, namespace, asUser(sub, rooms));
  const nodeOf = (client) =>
    server.kind === 'cluster' ? server.edges.find((e) => e.httpUrl === client.httpUrl).nodeId : undefined;

  /** Runs a subcommand with --json against the target; asserts it exited 0 and returns its JSON. */
  async function cli(...args) {
    const res = await runCli(args, { grpcAddr: server.grpcAddr, apiKey: API_KEY });
    assert.equal(res.code, 0, `roomcast ${args.join(' ')} exited ${res.code}:\n${res.stderr}`);
    assert.notEqual(res.json, undefined, `roomcast ${args.join(' ')} printed no JSON: ${res.stdout}`);
    return res.json;
  }

  useApiTarget({ namespaces: NAMESPACES, secret: SECRET, apiKey: API_KEY }, (t) => {
    ({ server, api, pool } = t);
  });

  it('sockets -r ROOM lists the members with their user ids, rooms and nodes', async () => {
    const alice = await connectAt(0, 'alice', ['cli-room']);
    const bob = await connectAt(1, 'bob', ['cli-room', 'other']);
    const carol = await connectAt(2, 'carol');

    const { sockets } = await cli('sockets', '-r', 'cli-room');
    assert.deepEqual(sorted(sockets.map((s) => s.id)), ids([alice, bob]));
    for (const [client, user, rooms] of [[alice, 'alice', ['cli-room']], [bob, 'bob', ['cli-room', 'other']]]) {
      const s = sockets.find((x) => x.id === client.id);
      assert.equal(s.user_id, user);
      assert.equal(s.namespace, '/');
      assert.deepEqual(sorted(s.rooms), sorted([client.id, ...rooms]));
      assert.notEqual(s.node_id, '');
      if (nodeOf(client)) assert.equal(s.node_id, nodeOf(client));
    }

    assert.deepEqual((await cli('sockets', '-u', 'carol')).sockets.map((s) => s.id), [carol.id]);
    assert.deepEqual(
      sorted((await cli('sockets', '-r', 'other', '-u', 'carol')).sockets.map((s) => s.id)),
      ids([bob, carol]),
    );
    assert.deepEqual((await cli('sockets', '--except-room', 'cli-room')).sockets.map((s) => s.id), [carol.id]);
    assert.deepEqual((await cli('sockets', '-n', '/admin')).sockets, []);
  });

  it('rooms counts the members of each room over every edge; -n picks the namespace', async () => {
    await connectAt(0, 'u1', ['beta', 'alpha']);
    await connectAt(1, 'u2', ['beta']);
    await connectAt(2, 'u3', ['beta', 'gamma']);
    await connectAt(0, 'u4', ['alpha'], '/admin');

    assert.deepEqual((await cli('rooms')).rooms, [
      { name: 'alpha', members: 1 },
      { name: 'beta', members: 3 },
      { name: 'gamma', members: 1 },
    ]);
    assert.deepEqual((await cli('rooms', '-n', '/admin')).rooms, [{ name: 'alpha', members: 1 }]);
  });

  it('emit EVENT ARGS with selector flags reaches exactly the selected sockets', async () => {
    const member = await connectAt(0, 'member', ['news']);
    const muted = await connectAt(1, 'muted', ['news', 'muted']);
    const dave = await connectAt(2, 'dave');
    const outsider = await connectAt(0, 'outsider');
    const everyone = [member, muted, dave, outsider];

    const emitted = await cli(
      'emit', 'headline', '[{"title":"hello"},1]',
      '-r', 'news', '-u', 'dave', '--except-room', 'muted',
    );
    assert.deepEqual(emitted, { emitted: true });
    await settle(api, everyone, { rooms: ['news', 'muted'], users: ['dave'] });
    assert.deepEqual(member.argsOf('headline'), [[{ title: 'hello' }, 1]]);
    assert.deepEqual(dave.argsOf('headline'), [[{ title: 'hello' }, 1]]);
    assert.equal(muted.count('headline'), 0);
    assert.equal(outsider.count('headline'), 0);

    await cli('emit', 'direct', '["to one"]', '-s', outsider.id, '--volatile');
    await cli('emit', 'no-args', '-n', '/', '--except-socket', member.id);
    await settle(api, everyone);
    assert.deepEqual(outsider.argsOf('direct'), [['to one']]);
    assert.equal(member.count('direct'), 0);
    assert.deepEqual(outsider.argsOf('no-args'), [[]]);
    assert.deepEqual(dave.argsOf('no-args'), [[]]);
    assert.equal(member.count('no-args'), 0);
  });

  it('emit --ack-timeout-ms collects each socket\'s ack, and reports the silent one', async () => {
    const yes = await connectAt(0, 'yes', ['poll']);
    const no = await connectAt(1, 'no', ['poll']);
    const silent = await connectAt(2, 'silent', ['poll']);
    yes.socket.on('vote', (question, callback) => callback('yes', { question }));
    no.socket.on('vote', (question, callback) => callback('no'));

    const { results, complete } = await cli('emit', 'vote', '["lunch?"]', '-r', 'poll', '--ack-timeout-ms', '1500');
    assert.equal(complete, true);
    assert.deepEqual(sorted(results.map((r) => r.socket_id)), ids([yes, no, silent]));
    const result = (client) => results.find((r) => r.socket_id === client.id);
    assert.deepEqual(result(yes).args, ['yes', { question: 'lunch?' }]);
    assert.equal(result(yes).acked, true);
    assert.deepEqual(result(no).args, ['no']);
    assert.equal(result(silent).acked, false);
    for (const client of [yes, no, silent]) {
      if (nodeOf(client)) assert.equal(result(client).node_id, nodeOf(client));
    }
  });

  it('disconnect -u USER disconnects every socket of that user and counts them', async () => {
    const alice1 = await connectAt(0, 'alice');
    const alice2 = await connectAt(1, 'alice');
    const bob = await connectAt(2, 'bob');
    const reasons = [alice1, alice2, bob].map((client) => {
      const list = [];
      client.socket.on('disconnect', (reason) => list.push(reason));
      return list;
    });

    assert.deepEqual(await cli('disconnect', '-u', 'alice'), { disconnected: 2 });
    await waitFor(() => reasons[0].length && reasons[1].length, 5000, "alice's sockets to be disconnected");
    assert.deepEqual(reasons.slice(0, 2), [['io server disconnect'], ['io server disconnect']]);
    assert.deepEqual(reasons[2], []);
    assert.equal(bob.socket.connected, true);

    assert.deepEqual(await cli('disconnect', '-s', bob.id, '--close'), { disconnected: 1 });
    await waitFor(() => reasons[2].length, 5000, 'bob to be disconnected');
  });

  it('join ROOM… and leave ROOM… act on the selected sockets', async () => {
    const alice = await connectAt(0, 'alice');
    const bob = await connectAt(1, 'bob');

    assert.deepEqual(await cli('join', 'room-1', 'room-2', '-u', 'alice'), { joined: true });
    assert.deepEqual((await cli('sockets', '-r', 'room-2')).sockets.map((s) => s.id), [alice.id]);
    assert.deepEqual(await cli('leave', 'room-1', '-r', 'room-1'), { left: true });
    assert.deepEqual((await cli('rooms')).rooms, [{ name: 'room-2', members: 1 }]);
    assert.equal(bob.socket.connected, true);
  });

  it('without --json prints text: a header and one line per socket', async () => {
    const client = await connectAt(0, 'texty', ['text-room']);
    const res = await runCli(['sockets', '-r', 'text-room'], {
      grpcAddr: server.grpcAddr,
      apiKey: API_KEY,
      json: false,
    });
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.trim().split('\n');
    assert.equal(lines.length, 2, res.stdout);
    assert.match(lines[1], new RegExp(`^${client.id.replace(/[-]/g, '\\-')}\\s+texty\\s`));
    assert.match(lines[1], /text-room/);
  });

  it('a gRPC error exits 1 with "roomcast: <Code>: <message>" on stderr', async () => {
    const cases = [
      [['rooms'], { apiKey: undefined }, /^roomcast: Unauthenticated: missing api key/m],
      [['rooms'], { apiKey: 'wrong-key' }, /^roomcast: Unauthenticated: invalid api key/m],
      [['emit', 'connect'], {}, /^roomcast: InvalidArgument: .*reserved/m],
      [['emit', 'e', '{"a":1}'], {}, /^roomcast: InvalidArgument: .*json array/m],
      [['sockets', '-n', 'admin'], {}, /^roomcast: InvalidArgument: .*namespace/m],
      [['emit', 'e', '-r', ''], {}, /^roomcast: InvalidArgument: .*room/m],
    ];
    for (const [args, opts, stderr] of cases) {
      const res = await runCli(args, { grpcAddr: server.grpcAddr, apiKey: API_KEY, ...opts });
      assert.equal(res.code, 1, `roomcast ${args.join(' ')}: exit code (stderr: ${res.stderr})`);
      assert.match(res.stderr, stderr);
      assert.equal(res.stdout, '', 'nothing on stdout');
    }
  });
});
