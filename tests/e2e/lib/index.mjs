// The roomcast end-to-end testkit: start the binary (standalone, or a cluster of
// edges and control planes over nats-server), talk gRPC to it, mint JWTs, connect
// socket.io-client sockets, wait for conditions with deadlines, serve a connect
// hook, run the CLI.
export * from './wait.mjs';
export * from './process.mjs';
export * from './nats.mjs';
export * from './cluster.mjs';
export * from './grpc.mjs';
export * from './jwt.mjs';
export * from './clients.mjs';
export * from './rawws.mjs';
export * from './hook.mjs';
export * from './cli.mjs';
export * from './certs.mjs';
export * from './suite.mjs';
