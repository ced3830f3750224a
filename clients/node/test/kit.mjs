// What the SDK's tests share: the repository's e2e testkit (standalone, or a
// cluster with ROOMCAST_E2E_TARGET=cluster), and user tokens.

export * from '../../../tests/e2e/lib/index.mjs';
import { claims, signHs256 } from '../../../tests/e2e/lib/index.mjs';

export const SECRET = 'sdk-node-hs256-secret-with-enough-bytes';
export const API_KEY = 'sdk-node-api-key';

let seq = 0;
/** A user id no other test uses. */
export const uid = (name) => `${name}-${process.pid}-${++seq}`;

/** socket.io-client options of a user (JWT `sub`), with extra `auth` fields. */
export const asUser = (sub, auth = {}, opts = {}) => ({ auth: { token: signHs256(claims(sub), SECRET), ...auth }, ...opts });
