import { createHash } from 'node:crypto';
import { sealData, unsealData } from 'iron-session';

/**
 * Seals and unseals values with iron-session, supporting secret rotation: the first
 * secret seals, every secret unseals. Each secret's iron "password id" is derived from
 * the secret itself, so reordering or adding secrets never makes an old seal point at
 * the wrong key.
 */
export class Sealer {
  private readonly sealPassword: Record<string, string>;
  private readonly unsealPasswords: Record<string, string>;

  constructor(secrets: readonly string[]) {
    const [first] = secrets;
    if (first === undefined) throw new Error('Sealer needs at least one secret');
    this.sealPassword = { [passwordId(first)]: first };
    this.unsealPasswords = Object.fromEntries(secrets.map((s) => [passwordId(s), s]));
  }

  /** `ttlSeconds` is also baked into the seal: iron refuses it afterwards. */
  seal(data: object, ttlSeconds: number): Promise<string> {
    return sealData(data as Record<string, unknown>, { password: this.sealPassword, ttl: ttlSeconds });
  }

  /**
   * The unsealed object, or null when the seal is tampered, truncated, expired or
   * made with an unknown secret. iron-session answers `{}` rather than throwing for
   * most of these, so an empty object means "no value".
   */
  async unseal<T extends object>(sealed: string, ttlSeconds: number): Promise<T | null> {
    try {
      const data = await unsealData<T>(sealed, { password: this.unsealPasswords, ttl: ttlSeconds });
      return Object.keys(data).length === 0 ? null : data;
    } catch {
      return null;
    }
  }
}

function passwordId(secret: string): string {
  // iron password ids are [A-Za-z0-9_]; a numeric id from the secret's hash keeps it stable.
  return String(createHash('sha256').update(secret).digest().readUInt32BE(0));
}
