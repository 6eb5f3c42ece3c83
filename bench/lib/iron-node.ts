/**
 * NOT used by token-handler: a prototype of iron's "Fe26.2" seal format (as iron-session 8
 * writes it, with the `~2` suffix) on node:crypto's synchronous primitives, to measure
 * what sealing would cost without WebCrypto's per-call overhead (key imports, promises,
 * thread-pool hops, a pure-JS base64url decoder). It reads iron-session's seals and
 * iron-session reads its seals (checked by bench/profile.ts), so it is a drop-in candidate.
 */
import { createCipheriv, createDecipheriv, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

const PREFIX = 'Fe26.2';
const SKEW_MS = 60_000;

/** `passwords`: iron password id → secret (as Sealer builds them). */
export function unsealNode<T>(sealed: string, passwords: Record<string, string>, ttlSeconds: number): T | null {
  void ttlSeconds; // iron checks the expiration baked into the seal, not the ttl given here
  const tilde = sealed.lastIndexOf('~');
  const body = tilde === -1 ? sealed : sealed.slice(0, tilde);
  const parts = body.split('*');
  if (parts.length !== 8 || parts[0] !== PREFIX) return null;
  const [, id, encryptionSalt, iv, encrypted, expiration, hmacSalt, hmac] = parts as [string, string, string, string, string, string, string, string];
  if (expiration) {
    if (!/^\d+$/.test(expiration) || Number(expiration) <= Date.now() - SKEW_MS) return null;
  }
  const secret = passwords[id || 'default'];
  if (secret === undefined) return null;
  const macBase = body.slice(0, body.length - hmacSalt.length - hmac.length - 2);
  const integrityKey = pbkdf2Sync(secret, hmacSalt, 1, 32, 'sha1');
  const expected = createHmac('sha256', integrityKey).update(macBase).digest();
  const given = Buffer.from(hmac, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const key = pbkdf2Sync(secret, encryptionSalt, 1, 32, 'sha1');
  try {
    const decipher = createDecipheriv('aes-256-cbc', key, Buffer.from(iv, 'base64url'));
    const plain = Buffer.concat([decipher.update(Buffer.from(encrypted, 'base64url')), decipher.final()]).toString('utf8');
    return JSON.parse(plain) as T;
  } catch {
    return null;
  }
}

export function sealNode(data: object, id: string, secret: string, ttlSeconds: number): string {
  const encryptionSalt = randomBytes(32).toString('hex');
  const iv = randomBytes(16);
  const key = pbkdf2Sync(secret, encryptionSalt, 1, 32, 'sha1');
  const cipher = createCipheriv('aes-256-cbc', key, iv);
  const encrypted = Buffer.concat([cipher.update(JSON.stringify(data), 'utf8'), cipher.final()]).toString('base64url');
  const expiration = ttlSeconds ? String(Date.now() + ttlSeconds * 1000) : '';
  const macBase = `${PREFIX}*${id}*${encryptionSalt}*${iv.toString('base64url')}*${encrypted}*${expiration}`;
  const hmacSalt = randomBytes(32).toString('hex');
  const hmac = createHmac('sha256', pbkdf2Sync(secret, hmacSalt, 1, 32, 'sha1')).update(macBase).digest('base64url');
  return `${macBase}*${hmacSalt}*${hmac}~2`;
}
