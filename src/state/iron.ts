import { createCipheriv, createDecipheriv, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * iron's "Fe26.2" seal, exactly as iron-session 8 writes and reads it (iron-webcrypto's
 * defaults: AES-256-CBC and HMAC-SHA-256, each key derived by PBKDF2-SHA-1 with one
 * iteration from the secret and a 256-bit random salt; the `~2` version suffix), on
 * node:crypto's synchronous primitives. iron-session does the same through WebCrypto,
 * whose per-call overhead (key imports, promises, thread-pool hops) made one seal or
 * unseal of a session record cost 15 to 25 times as much CPU (bench/README.md): with many
 * sessions, a third of the proxy's CPU. The test suite checks that iron-session reads
 * these seals and that these functions read iron-session's, tampered and expired ones
 * included (test/iron.test.ts).
 *
 *   Fe26.2*<password id>*<encryption salt>*<iv>*<ciphertext>*<expiration ms>*<hmac salt>*<hmac>~2
 *
 * The HMAC covers everything before the HMAC salt; the version suffix is outside it (as in
 * iron-session, which ignores what follows `~`).
 */

const MAC_PREFIX = 'Fe26.2';
const VERSION_SUFFIX = '~2';
/** iron accepts a seal up to this long after its expiration (clock skew between servers). */
const TIMESTAMP_SKEW_MS = 60_000;
const SALT_BYTES = 32;
const IV_BYTES = 16;
const KEY_BYTES = 32;
/** iron refuses shorter passwords. */
export const MIN_PASSWORD_LENGTH = 32;

export interface IronPassword {
  /** iron password id: letters, digits and `_`, so a seal names the secret that made it. */
  id: string;
  secret: string;
}

function deriveKey(secret: string, salt: string): Buffer {
  return pbkdf2Sync(secret, salt, 1, KEY_BYTES, 'sha1');
}

function mac(secret: string, salt: string, macBase: string): Buffer {
  return createHmac('sha256', deriveKey(secret, salt)).update(macBase).digest();
}

/** Seals `data` (JSON) with the password; `ttlMs` > 0 bakes an expiration into the seal. */
export function ironSeal(data: unknown, password: IronPassword, ttlMs: number, now = Date.now()): string {
  if (!/^\w+$/.test(password.id)) throw new Error('Invalid password id');
  if (password.secret.length < MIN_PASSWORD_LENGTH) throw new Error(`Password string too short (min ${MIN_PASSWORD_LENGTH} characters required)`);
  const encryptionSalt = randomBytes(SALT_BYTES).toString('hex');
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-cbc', deriveKey(password.secret, encryptionSalt), iv);
  const encrypted = Buffer.concat([cipher.update(JSON.stringify(data), 'utf8'), cipher.final()]);
  const expiration = ttlMs > 0 ? String(now + ttlMs) : '';
  const macBase = `${MAC_PREFIX}*${password.id}*${encryptionSalt}*${iv.toString('base64url')}*${encrypted.toString('base64url')}*${expiration}`;
  const hmacSalt = randomBytes(SALT_BYTES).toString('hex');
  return `${macBase}*${hmacSalt}*${mac(password.secret, hmacSalt, macBase).toString('base64url')}${VERSION_SUFFIX}`;
}

/**
 * The sealed value, or undefined when the seal is malformed, made with a password not in
 * `passwords` (id → secret), tampered with or expired. Never throws on input.
 */
export function ironUnseal(sealed: string, passwords: Readonly<Record<string, string>>, now = Date.now()): unknown {
  // As iron-session reads it: the version is the number after the first `~` (a seal without
  // one is from iron-session 6, whose format this project never wrote).
  const [body = '', version] = sealed.split('~', 2);
  if (version === undefined || Number.parseInt(version, 10) !== 2) return undefined;
  const parts = body.split('*');
  if (parts.length !== 8) return undefined;
  const [prefix, id, encryptionSalt, iv, encrypted, expiration, hmacSalt, hmac] = parts as [string, string, string, string, string, string, string, string];
  if (prefix !== MAC_PREFIX) return undefined;
  if (expiration) {
    if (!/^\d+$/.test(expiration) || Number(expiration) <= now - TIMESTAMP_SKEW_MS) return undefined;
  }
  const secret = Object.hasOwn(passwords, id || 'default') ? passwords[id || 'default'] : undefined;
  if (secret === undefined || !hmacSalt) return undefined;
  const macBase = `${prefix}*${id}*${encryptionSalt}*${iv}*${encrypted}*${expiration}`;
  // Compared as text, as iron does: another spelling of the same bytes is not the seal.
  const expected = Buffer.from(mac(secret, hmacSalt, macBase).toString('base64url'));
  const given = Buffer.from(hmac);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-cbc', deriveKey(secret, encryptionSalt), Buffer.from(iv, 'base64url'));
    const plain = Buffer.concat([decipher.update(Buffer.from(encrypted, 'base64url')), decipher.final()]).toString('utf8');
    return plain ? (JSON.parse(plain) as unknown) : undefined;
  } catch {
    // A bad IV length or padding behind a valid MAC: made with other parameters than ours.
    return undefined;
  }
}

/*
 * What the caches key and compare seals by, read from the format without opening it.
 */

/** When a seal was made to expire (its expiration field, epoch ms); one without (no ttl) never does. */
export function ironExpiration(sealed: string): number {
  const field = sealed.split('*', 6)[5];
  return field ? Number(field) : Number.MAX_SAFE_INTEGER;
}

/**
 * A seal's HMAC (and version suffix): a short key that hashes cheaply on every request,
 * where hashing the whole 2 KB seal was measurable.
 */
export function ironMac(sealed: string): string {
  return sealed.slice(sealed.lastIndexOf('*') + 1);
}

/**
 * A seal's HMAC salt and HMAC (and version suffix). Two seals read from the same trusted
 * place with the same tail are the same seal: the HMAC verified for one covers the other.
 */
export function ironTail(sealed: string): string {
  return sealed.slice(sealed.lastIndexOf('*', sealed.lastIndexOf('*') - 1) + 1);
}
