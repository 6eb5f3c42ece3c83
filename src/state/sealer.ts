import { createHash, hkdfSync } from 'node:crypto';
import { BoundedTtlCache } from './bounded-cache.js';
import { ironExpiration, ironMac, ironSeal, ironUnseal, type IronPassword } from './iron.js';

export interface SealerOptions {
  /**
   * Unsealed values are remembered, keyed by the exact sealed string, so the hot path
   * (every proxied request unseals its cookie) pays for the crypto once per cookie value
   * rather than once per request. A seal is immutable: a changed session has a new seal.
   */
  cacheEntries?: number;
  /**
   * Longest a value stays remembered. Never beyond the seal's own expiry (baked into it), so
   * the cache accepts nothing iron would refuse. Default: the seal's expiry alone.
   */
  cacheTtlMs?: number;
  now?: () => number;
}

/**
 * Seals and unseals values in iron-session's format (iron.ts), supporting secret rotation: the first
 * secret seals, every secret unseals. Each secret's iron "password id" is derived from
 * the secret itself, so reordering or adding secrets never makes an old seal point at
 * the wrong key.
 */
export class Sealer {
  private readonly sealPassword: IronPassword;
  private readonly unsealPasswords: Record<string, string>;
  /** Keyed by the seal's MAC (short, unique per seal); the whole seal is compared on a hit. */
  private readonly unsealed: BoundedTtlCache<{ sealed: string; data: object }> | undefined;
  private readonly now: () => number = Date.now;
  private readonly cacheTtlMs: number = Number.MAX_SAFE_INTEGER;

  constructor(secrets: readonly string[], options: SealerOptions = {}) {
    const [first] = secrets;
    if (first === undefined) throw new Error('Sealer needs at least one secret');
    this.sealPassword = { id: passwordId(first), secret: first };
    this.unsealPasswords = Object.fromEntries(secrets.map((s) => [passwordId(s), s]));
    this.now = options.now ?? Date.now;
    if (options.cacheEntries) {
      this.cacheTtlMs = options.cacheTtlMs ?? Number.MAX_SAFE_INTEGER;
      this.unsealed = new BoundedTtlCache(options.cacheEntries, this.cacheTtlMs, this.now);
    }
  }

  /**
   * `ttlSeconds` is also baked into the seal: iron refuses it afterwards. A seal that is a
   * cookie (`remember`) goes into the unseal cache at once: the browser presents it next, and
   * so never pays an unseal for a cookie this process made.
   */
  async seal(data: object, ttlSeconds: number, remember = false): Promise<string> {
    const sealed = ironSeal(data, this.sealPassword, ttlSeconds * 1000, this.now());
    if (remember) this.remember(sealed, data);
    return sealed;
  }


  /**
   * The unsealed object, or null when the seal is tampered, truncated, expired or made
   * with an unknown secret (an empty object, which no caller seals, counts as no value).
   * Synchronous. A seal unsealed recently is answered from the cache; `remember: false` for
   * seals that are cached elsewhere already (a Redis session record, kept by the store's
   * local cache), so that they do not push the cookies out.
   */
  unseal<T extends object>(sealed: string, remember = true): T | null {
    const remembered = this.unsealed?.get(ironMac(sealed));
    if (remembered && remembered.sealed === sealed) return remembered.data as T;
    // The expiration baked into the seal when it was made is what decides.
    const data = ironUnseal(sealed, this.unsealPasswords, this.now());
    if (typeof data !== 'object' || data === null || Object.keys(data).length === 0) return null;
    // Only successes are remembered: garbage cannot fill the cache with entries of its own.
    if (remember) this.remember(sealed, data);
    return data as T;
  }

  private remember(sealed: string, data: object): void {
    if (!this.unsealed) return;
    const lifeMs = Math.min(this.cacheTtlMs, ironExpiration(sealed) - this.now());
    if (lifeMs > 0) this.unsealed.set(ironMac(sealed), { sealed, data }, lifeMs);
  }
}

function passwordId(secret: string): string {
  // iron password ids are [A-Za-z0-9_]; a numeric id from the secret's hash keeps it stable.
  return String(createHash('sha256').update(secret).digest().readUInt32BE(0));
}

/**
 * The sealing secrets of one app of several (`apps:`): each configured secret turned into
 * a key of the app's own (HKDF-SHA-256 with the app's name), so an app never unseals
 * another's cookie, pending login or refresh result, even when the apps share secrets.
 * Rotation works as before: the order and the number of secrets are kept.
 */
export function appSealingSecrets(secrets: readonly string[], app: string): string[] {
  return secrets.map((secret) => Buffer.from(hkdfSync('sha256', secret, 'token-handler apps', `app:${app}`, 32)).toString('base64url'));
}
