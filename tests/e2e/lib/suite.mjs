// Shared set-up of suites that run against `startTarget`.

import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import { SocketPool } from './clients.mjs';
import { startTarget } from './cluster.mjs';
import { startStandalone } from './process.mjs';
import { createRoomcastClient } from './grpc.mjs';
import { waitFor } from './wait.mjs';

/**
 * Waits until FetchSockets shows no socket in `namespaces`, so that the next
 * test's whole-namespace selectors and room counts see only its own sockets.
 */
export function waitNoSockets(api, namespaces, what = 'every socket of the last test to be gone') {
  return waitFor(
    async () => {
      for (const namespace of namespaces) {
        if ((await api.fetchSockets({ target: { namespace } })).sockets.length) return false;
      }
      return true;
    },
    10_000,
    what,
    50,
  );
}

/**
 * Registers the hooks of a suite of API tests against `startTarget`: before
 * all, the target (with `namespaces`, an HS256 `secret` and an `apiKey`), a
 * gRPC client and a SocketPool over every edge, handed to `ready({ server,
 * api, pool })`; after each test, the sockets closed and gone from
 * FetchSockets; after all, everything stopped.
 */
export function useApiTarget({ namespaces, secret, apiKey }, ready) {
  let state = {};
  before(async () => {
    const server = await startTarget([
      ...namespaces.flatMap((ns) => ['--namespace', ns]),
      '--jwt-secret', secret,
      '--api-key', apiKey,
    ]);
    const api = createRoomcastClient(server.grpcAddr, { apiKey });
    const pool = new SocketPool(server.httpUrls);
    state = { server, api, pool };
    ready(state);
  });
  afterEach(async () => {
    state.pool.closeAll();
    // The next test's whole-namespace selectors and room counts must not see these.
    await waitNoSockets(state.api, namespaces);
  });
  after(async () => {
    state.pool?.closeAll();
    state.api?.close();
    await state.server?.stop();
  });
}

/**
 * Registers the hooks of a suite that attacks one `roomcast standalone`
 * (started with `args`): before all, the server, a gRPC client, a SocketPool
 * and a well-behaved websocket "bystander" socket; after all, everything
 * stopped. Returns them (set once the suite's `before` hooks ran) with
 * `stillServes()`, which asserts that the process is up and the bystander
 * still gets a fresh emit.
 */
export function useBystanderServer(args) {
  const state = {};
  let seq = 0;
  before(async () => {
    state.server = await startStandalone(args);
    state.api = createRoomcastClient(state.server.grpcAddr);
    state.pool = new SocketPool(state.server.httpUrl);
    state.bystander = await state.pool.connect('/', { transports: ['websocket'] });
  });
  after(async () => {
    state.pool?.closeAll();
    state.api?.close();
    await state.server?.stop();
  });
  state.stillServes = async () => {
    const { server, api, bystander } = state;
    assert.ok(server.alive, `roomcast exited; stderr:\n${server.stderrTail()}`);
    const n = ++seq;
    await api.emit({ to: { socket_ids: [bystander.id] }, event: 'still-there', args_json: JSON.stringify([n]) });
    await bystander.nextEvent('still-there', ([got]) => got === n);
    assert.ok(bystander.socket.connected);
  };
  return state;
}
