/**
 * DPoP keys (RFC 9449): the key pairs that bind access tokens to token-handler, and the
 * proofs signed with them.
 *
 * - **Per-session keys** (the default with `oidc.dpop: true`): an ES256 key pair made at
 *   each login, before the code exchange, kept in the session record as its private scalar
 *   alone (`d`, 43 characters: the public point is derived from it), sealed like every
 *   other field, kept across refreshes, gone with the record at logout. A token and key
 *   leaked from one session unlock nothing else.
 * - **The configured key** (`oidc.dpopKeyFile`): one key for every session and for the
 *   client-credentials token, where a provider or an operator wants a known key.
 * - **The process key**: the client-credentials token (`token: client` routes) belongs to
 *   no session; without a configured key it is bound to a key made at startup (each
 *   replica its own, like its cached client token).
 *
 * Proofs toward the APIs are signed synchronously with node:crypto on imported KeyObjects
 * (cached per key), so a proxied request on a DPoP route still waits for no promise.
 */
import { createECDH, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign, webcrypto, type KeyObject, type JsonWebKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The proof algorithms token-handler signs with. */
export type DpopAlgorithm = 'ES256' | 'ES384' | 'EdDSA';

/** What a DPoP key is made from: a private key token-handler can sign proofs with. */
export class DpopKey {
  /** RFC 7638 thumbprint of the public key: the `cnf.jkt` of the tokens bound to it. */
  readonly thumbprint: string;
  /** base64url of the proof's protected header (alg, typ, jwk): the same for every proof. */
  private readonly encodedHeader: string;
  private readonly hash: string | null;
  private readonly dsaEncoding: 'ieee-p1363' | undefined;
  private pair: Promise<webcrypto.CryptoKeyPair> | undefined;

  constructor(
    private readonly privateKey: KeyObject,
    readonly alg: DpopAlgorithm,
    private readonly publicJwk: JsonWebKey,
  ) {
    this.thumbprint = jwkThumbprint(publicJwk);
    this.encodedHeader = base64url(JSON.stringify({ typ: 'dpop+jwt', alg, jwk: publicJwk }));
    this.hash = alg === 'ES256' ? 'sha256' : alg === 'ES384' ? 'sha384' : null;
    this.dsaEncoding = alg === 'EdDSA' ? undefined : 'ieee-p1363';
  }

  /**
   * A DPoP proof JWT: `htm` and `htu` of the request (htu without query and fragment,
   * RFC 9449 §4.2), `iat` now, a unique `jti`, `ath` (accessTokenHash of the token the
   * request carries), `nonce` when the server gave one.
   */
  proof(htm: string, htu: string, ath?: string, nonce?: string): string {
    const payload: Record<string, unknown> = { htm, htu, iat: Math.floor(Date.now() / 1000), jti: randomUUID() };
    if (ath !== undefined) payload.ath = ath;
    if (nonce !== undefined) payload.nonce = nonce;
    const input = `${this.encodedHeader}.${base64url(JSON.stringify(payload))}`;
    const signature = sign(this.hash, Buffer.from(input), this.dsaEncoding ? { key: this.privateKey, dsaEncoding: this.dsaEncoding } : this.privateKey);
    return `${input}.${signature.toString('base64url')}`;
  }

  /** The key as WebCrypto keys, for openid-client's DPoP handle (imported once). */
  cryptoKeyPair(): Promise<webcrypto.CryptoKeyPair> {
    this.pair ??= importPair(this.privateKey, this.publicJwk, this.alg);
    return this.pair;
  }
}

async function importPair(privateKey: KeyObject, publicJwk: JsonWebKey, alg: DpopAlgorithm): Promise<webcrypto.CryptoKeyPair> {
  const algorithm = alg === 'EdDSA' ? { name: 'Ed25519' } : { name: 'ECDSA', namedCurve: alg === 'ES256' ? 'P-256' : 'P-384' };
  const subtle = webcrypto.subtle;
  const privateJwk = privateKey.export({ format: 'jwk' });
  return {
    privateKey: (await subtle.importKey('jwk', privateJwk as webcrypto.JsonWebKey, algorithm, false, ['sign'])),
    // openid-client puts the public key in the proof header: it must be extractable.
    publicKey: (await subtle.importKey('jwk', publicJwk as webcrypto.JsonWebKey, algorithm, true, ['verify'])),
  };
}

/** `ath`: base64url(SHA-256(access token)) (RFC 9449 §4.2); callers keep it per token. */
export function accessTokenHash(accessToken: string): string {
  return createHash('sha256').update(accessToken).digest('base64url');
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url) of a public EC or OKP key. */
export function jwkThumbprint(jwk: JsonWebKey): string {
  const members =
    jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : jwk.kty === 'OKP' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x } : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

function base64url(text: string): string {
  return Buffer.from(text).toString('base64url');
}

/** The public JWK of a key: only the members a proof header carries. */
function publicJwkOf(privateKey: KeyObject): JsonWebKey {
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
  return jwk.kty === 'EC' ? { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y } : { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
}

/** The proof algorithm of a private key, or why it cannot sign proofs. */
export function dpopAlgorithmOf(key: KeyObject): DpopAlgorithm | string {
  if (key.type !== 'private') return 'is not a private key';
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ES256';
    if (curve === 'secp384r1') return 'ES384';
    return `is an EC key on ${curve ?? 'an unknown curve'}`;
  }
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  return `is a${key.asymmetricKeyType === 'rsa' ? 'n RSA' : ` ${key.asymmetricKeyType ?? 'unknown'}`} key`;
}

/** Reads `oidc.dpopKeyFile`: a private JWK (JSON) or a PEM private key. Throws with what is wrong. */
export function readDpopKeyFile(file: string): DpopKey {
  const text = readFileSync(file, 'utf8');
  let key: KeyObject;
  const trimmed = text.trim();
  try {
    key = trimmed.startsWith('{') ? createPrivateKey({ key: JSON.parse(trimmed) as JsonWebKey, format: 'jwk' }) : createPrivateKey(text);
  } catch {
    throw new Error('holds no private key; expected a private JWK (JSON with "d") or a PEM private key (P-256, P-384 or Ed25519)');
  }
  const alg = dpopAlgorithmOf(key);
  if (alg !== 'ES256' && alg !== 'ES384' && alg !== 'EdDSA') throw new Error(`${alg}; expected a P-256 (ES256), P-384 (ES384) or Ed25519 (EdDSA) private key`);
  return new DpopKey(key, alg, publicJwkOf(key));
}

/** A new ES256 key pair for one session: its private scalar, all the record keeps. */
export function newSessionKeyScalar(): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const d = privateKey.export({ format: 'jwk' }).d;
  if (!d) throw new Error('generated EC key has no private scalar');
  return d;
}

/** The ES256 key of a session, from the private scalar its record keeps (the public point is derived). */
export function sessionKeyFromScalar(d: string): DpopKey {
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(Buffer.from(d, 'base64url'));
  const point = ecdh.getPublicKey();
  const x = point.subarray(1, 33).toString('base64url');
  const y = point.subarray(33, 65).toString('base64url');
  const privateKey = createPrivateKey({ key: { kty: 'EC', crv: 'P-256', d, x, y }, format: 'jwk' });
  return new DpopKey(privateKey, 'ES256', { kty: 'EC', crv: 'P-256', x, y });
}

/** A new ES256 key held in memory only (the process key). */
export function newProcessKey(): DpopKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return new DpopKey(privateKey, 'ES256', publicJwkOf(privateKey));
}

/** Session keys imported at most once each while in use: the most recently used are kept. */
const SESSION_KEY_CACHE_ENTRIES = 10_000;

/**
 * Which key signs for what: the configured key, or per-session keys and a process key.
 * Built once (plugin.ts) when `oidc.dpop` is on.
 */
export class DpopKeys {
  /** The key of the client-credentials token: the configured key or one made at startup. */
  readonly processKey: DpopKey;
  private readonly sessionKeys = new Map<string, DpopKey>();

  constructor(private readonly configured?: DpopKey) {
    this.processKey = configured ?? newProcessKey();
  }

  /** Whether sessions get their own key (no key configured). */
  get perSession(): boolean {
    return this.configured === undefined;
  }

  /** The private scalar of a new session key, or undefined when every session uses the configured key. */
  newSessionKey(): string | undefined {
    return this.configured ? undefined : newSessionKeyScalar();
  }

  /**
   * The key a session's tokens are bound to: the configured key, or the session's own
   * (undefined for a session from before `oidc.dpop` was turned on, which holds none).
   */
  forSession(record: { dpopKey?: string }): DpopKey | undefined {
    if (this.configured) return this.configured;
    const d = record.dpopKey;
    if (d === undefined) return undefined;
    let key = this.sessionKeys.get(d);
    if (key === undefined) {
      key = sessionKeyFromScalar(d);
      if (this.sessionKeys.size >= SESSION_KEY_CACHE_ENTRIES) this.sessionKeys.delete(this.sessionKeys.keys().next().value as string);
      this.sessionKeys.set(d, key);
    }
    return key;
  }
}
