// A backend's `roomcast.v1.ConnectHook` service, served by grpc-js from the test
// process on loopback, for edges started with `--connect-hook-url`. A test sets
// what it answers (`hook.authorize = async (request, call) => response`) and
// reads what it was asked (`hook.requests`).

import grpc from '@grpc/grpc-js';
import { roomcastPackage } from './grpc.mjs';

/** Answers every CONNECT with `allow: true` and no user. */
export const allowAll = async () => ({ allow: true });

/**
 * Resolves after `ms`, or as soon as the caller cancels the call (its deadline
 * passed), so that a slow answer leaves no timer behind.
 */
export function delayAnswer(call, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    call.once('cancelled', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A gRPC error with a status code, as a handler throws it. */
export function grpcError(code, message) {
  return Object.assign(new Error(message), { code, details: message });
}

function bind(server, port) {
  return new Promise((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) =>
      err ? reject(err) : resolve(bound),
    ),
  );
}

/**
 * Starts a ConnectHook server on 127.0.0.1 (a random port). Resolves to:
 *   url        "http://127.0.0.1:PORT", for --connect-hook-url
 *   port
 *   authorize  the handler, `(AuthorizeRequest, call) => AuthorizeResponse | Promise`;
 *              a thrown error with a `code` answers with that gRPC status
 *   requests   every AuthorizeRequest received, in order (field names as in the proto)
 *   stop()     shuts the server down at once (cancelling calls in flight)
 *   start()    serves again on the same port after stop()
 */
export async function startConnectHook(authorize = allowAll) {
  const hook = {
    authorize,
    requests: [],
    port: 0,
    url: undefined,
    server: null,
    async start() {
      const server = new grpc.Server();
      server.addService(roomcastPackage().ConnectHook.service, {
        Authorize: (call, callback) => {
          hook.requests.push(call.request);
          Promise.resolve()
            .then(() => hook.authorize(call.request, call))
            .then(
              (response) => callback(null, response),
              (err) => callback(err),
            );
        },
      });
      hook.port = await bind(server, hook.port);
      hook.url = `http://127.0.0.1:${hook.port}`;
      hook.server = server;
      return hook;
    },
    stop() {
      hook.server?.forceShutdown();
      hook.server = null;
    },
  };
  return hook.start();
}
