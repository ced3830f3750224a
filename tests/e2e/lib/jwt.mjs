// JWT minting with node:crypto only: HS256, RS256 and the unsigned `alg: none` form.

import crypto from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const b64url = (data) => Buffer.from(data).toString('base64url');
const nowSeconds = () => Math.floor(Date.now() / 1000);

function signingInput(header, claims) {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
}

/** Claims for user `sub`, valid for an hour; `extra` is merged in (and may override). */
export function claims(sub, extra = {}) {
  const now = nowSeconds();
  return { sub, iat: now, exp: now + 3600, ...extra };
}

/** Claims that expired an hour ago (well past any validation leeway). */
export function expiredClaims(sub, extra = {}) {
  const now = nowSeconds();
  return { sub, iat: now - 7200, exp: now - 3600, ...extra };
}

export function signHs256(payload, secret) {
  const input = signingInput({ alg: 'HS256', typ: 'JWT' }, payload);
  return `${input}.${b64url(crypto.createHmac('sha256', secret).update(input).digest())}`;
}

export function signRs256(payload, privateKey) {
  const input = signingInput({ alg: 'RS256', typ: 'JWT' }, payload);
  return `${input}.${b64url(crypto.sign('sha256', Buffer.from(input), privateKey))}`;
}

/** An unsigned token (`alg: none`, empty signature), which a server must refuse. */
export function unsignedToken(payload) {
  return `${signingInput({ alg: 'none', typ: 'JWT' }, payload)}.`;
}

/**
 * A fresh RSA key pair. The public key is written as PEM to a temp file for
 * `--jwt-public-key-file`; call `cleanup()` when done.
 */
export function rsaKeyPair() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-e2e-'));
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' });
  const publicKeyPath = path.join(dir, 'jwt-public.pem');
  writeFileSync(publicKeyPath, publicKeyPem);
  return {
    privateKey,
    publicKeyPem,
    publicKeyPath,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
