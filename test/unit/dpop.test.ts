/**
 * DPoP keys and proofs (src/oidc/dpop.ts) checked with jose, an independent implementation:
 * a proof verifies with the key in its own header, its claims are what RFC 9449 §4.2 asks,
 * a session key rebuilt from its stored scalar is the same key, thumbprints are RFC 7638's.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, EmbeddedJWK, jwtVerify, type JWK } from 'jose';
import { accessTokenHash, DpopKeys, newSessionKeyScalar, readDpopKeyFile, sessionKeyFromScalar } from '../../src/oidc/dpop.js';
import { isDpopNonceChallenge } from '../../src/proxy/api-routes.js';

describe('DPoP keys and proofs', () => {
  it('a proof verifies with the key of its own header and carries htm, htu, iat, jti, ath and nonce', async () => {
    const key = sessionKeyFromScalar(newSessionKeyScalar());
    const proof = key.proof('POST', 'https://api.example/orders', accessTokenHash('token-1'), 'n-1');
    const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['ES256'] });
    expect(protectedHeader.jwk).not.toHaveProperty('d');
    expect(await calculateJwkThumbprint(protectedHeader.jwk as JWK)).toBe(key.thumbprint);
    expect(payload).toMatchObject({ htm: 'POST', htu: 'https://api.example/orders', nonce: 'n-1', ath: accessTokenHash('token-1') });
    expect(Math.abs((payload.iat as number) - Date.now() / 1000)).toBeLessThan(5);
    expect(key.proof('GET', 'https://api.example/', undefined, undefined)).not.toContain('"ath"');
    const jtis = new Set(Array.from({ length: 50 }, () => JSON.parse(Buffer.from(key.proof('GET', 'https://a/', undefined, undefined).split('.')[1]!, 'base64url').toString()).jti));
    expect(jtis.size).toBe(50);
  });

  it('a session key rebuilt from its 43-character scalar is the same key', () => {
    const d = newSessionKeyScalar();
    expect(d).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(sessionKeyFromScalar(d).thumbprint).toBe(sessionKeyFromScalar(d).thumbprint);
    expect(sessionKeyFromScalar(newSessionKeyScalar()).thumbprint).not.toBe(sessionKeyFromScalar(d).thumbprint);
  });

  it('per-session keys are imported once and kept; the configured key replaces them', () => {
    const keys = new DpopKeys();
    const record = { dpopKey: keys.newSessionKey()! };
    expect(keys.perSession).toBe(true);
    expect(keys.forSession(record)).toBe(keys.forSession({ ...record }));
    expect(keys.forSession({})).toBeUndefined();
    const dir = mkdtempSync(join(tmpdir(), 'dpop-'));
    const file = join(dir, 'key.json');
    writeFileSync(file, JSON.stringify(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ format: 'jwk' })));
    const configured = new DpopKeys(readDpopKeyFile(file));
    expect(configured.newSessionKey()).toBeUndefined();
    expect(configured.forSession({})).toBe(configured.processKey);
    expect(configured.processKey.alg).toBe('ES384');
  });

  it('an Ed25519 key signs EdDSA proofs that verify', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dpop-'));
    const file = join(dir, 'key.pem');
    writeFileSync(file, generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }));
    const key = readDpopKeyFile(file);
    const { protectedHeader } = await jwtVerify(key.proof('GET', 'https://a/b', undefined, undefined), EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['EdDSA'] });
    expect(protectedHeader.alg).toBe('EdDSA');
    await expect(key.cryptoKeyPair()).resolves.toHaveProperty('publicKey');
  });

  it('recognises an upstream nonce challenge, and nothing else', () => {
    expect(isDpopNonceChallenge('DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"')).toBe(true);
    expect(isDpopNonceChallenge(['Bearer realm="x"', 'DPoP algs="ES256", error="use_dpop_nonce"'])).toBe(true);
    expect(isDpopNonceChallenge('DPoP error="invalid_token"')).toBe(false);
    expect(isDpopNonceChallenge('Bearer error="use_dpop_nonce"')).toBe(false);
    expect(isDpopNonceChallenge(undefined)).toBe(false);
  });
});
