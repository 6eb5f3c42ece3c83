/**
 * Synthetic but realistic session records for the memory and Redis measurements: the
 * shape and the string lengths of a record produced by a real login against the bench
 * provider, with every token, id and personal claim made unique per session (nothing is
 * shared between records, as after real logins).
 */
import { randomFillSync } from 'node:crypto';
import type { SessionRecord } from '../../src/state/record.js';
import { newSessionKeyScalar } from '../../src/oidc/dpop.js';

export type TokenProfile = 'opaque' | 'jwt';

const ALPHABET = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_', 'latin1');
/** Random base64url characters, handed out once each (refilled when used up): little garbage per string. */
const pool = Buffer.allocUnsafe(1 << 20);
let offset = pool.length;

function take(length: number): number {
  if (length > pool.length) throw new Error('randomText: too long');
  if (offset + length > pool.length) {
    randomFillSync(pool);
    for (let i = 0; i < pool.length; i++) pool[i] = ALPHABET[pool[i]! & 63]!;
    offset = 0;
  }
  const start = offset;
  offset += length;
  return start;
}

/** A random base64url string of exactly `length` characters (a flat, one-byte V8 string). */
export function randomText(length: number): string {
  const start = take(length);
  return pool.toString('latin1', start, start + length);
}

/** Something shaped like a signed JWT (header.payload.signature) of `length` characters, as one flat string. */
export function jwtLike(length: number): string {
  const header = 'eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6InI0In0';
  if (length < header.length + 360) return randomText(length);
  const start = take(length);
  pool.write(header, start, 'latin1');
  pool[start + header.length] = 0x2e; // '.'
  pool[start + length - 343] = 0x2e; // RS256 signature: 342 characters
  return pool.toString('latin1', start, start + length);
}

/**
 * One record like `template` (a record from a real login) with fresh values, passed
 * through JSON as token-handler's records are (token responses and ID-token claims are
 * parsed JSON), so its strings are flat like real ones.
 * `opaque`: the bench provider's tokens (43-character opaque access and refresh tokens).
 * `jwt`: an ~800-byte JWT access token, as many providers issue.
 */
export function syntheticRecord(template: SessionRecord, index: number, profile: TokenProfile, now: number): SessionRecord {
  const user = `user-${index}-${randomText(6)}`;
  const claims: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(template.claims)) {
    if (typeof value === 'string') claims[name] = randomText(value.length);
    else if (Array.isArray(value)) claims[name] = value.map((v) => (typeof v === 'string' ? randomText(v.length) : v));
    else claims[name] = value;
  }
  claims.sub = user;
  if ('name' in template.claims) claims.name = `User ${user}`;
  if ('email' in template.claims) claims.email = `${user}@example.test`;
  // Providers that support logout notifications put the provider session id in the ID token
  // (the bench provider does not); the Redis store indexes it, so count it.
  if (!('sid' in template.claims)) claims.sid = randomText(36);
  if ('iss' in template.claims) claims.iss = template.claims.iss;
  if ('aud' in template.claims) claims.aud = template.claims.aud;
  const record: SessionRecord = {
    id: randomText(template.id.length),
    accessToken: profile === 'jwt' ? jwtLike(800) : randomText(template.accessToken.length),
    tokenType: 'Bearer',
    accessTokenExpiresAt: now + 900_000,
    claims,
    createdAt: now,
    lastSeenAt: now,
  };
  if (template.refreshToken !== undefined) record.refreshToken = randomText(template.refreshToken.length);
  if (template.idToken !== undefined) record.idToken = jwtLike(template.idToken.length);
  if (template.scope !== undefined) record.scope = template.scope;
  // DPoP (oidc.dpop): every session its own key, as logins make them.
  if (template.dpopKey !== undefined) record.dpopKey = newSessionKeyScalar();
  return JSON.parse(JSON.stringify(record)) as SessionRecord;
}

/** Bytes of the record as JSON (what gets sealed). */
export function payloadBytes(record: SessionRecord): number {
  return Buffer.byteLength(JSON.stringify(record));
}
