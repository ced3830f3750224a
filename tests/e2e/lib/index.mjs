// The roomcast end-to-end testkit: start the binary, talk gRPC to it, mint JWTs,
// connect socket.io-client sockets, wait for conditions with deadlines.
export * from './wait.mjs';
export * from './process.mjs';
export * from './grpc.mjs';
export * from './jwt.mjs';
export * from './clients.mjs';
export * from './rawws.mjs';
