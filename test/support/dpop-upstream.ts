/**
 * A real upstream API (node:http on 127.0.0.1) that accepts only DPoP-bound access tokens
 * (RFC 9449 §7) and verifies everything a resource server must:
 *
 * - `Authorization: DPoP <token>` (a Bearer presentation is refused: the tokens are bound);
 * - exactly one `DPoP` header, a JWT with `typ: dpop+jwt`, an asymmetric `alg` it accepts,
 *   a public `jwk` in its header (a private one is refused), signed by that key;
 * - `htm` = the request's method, `htu` = this server's URL of the request without query and
 *   fragment, `iat` within ±`iatWindowSeconds`, a `jti` never seen before (replay cache),
 *   `ath` = base64url(SHA-256(token));
 * - the token: a JWT signed by the provider (JWKS, issuer, audience, expiry) whose `cnf.jkt`
 *   is the RFC 7638 thumbprint of the proof's key;
 * - its own nonce when `requireNonce` is on: a proof without the current nonce gets
 *   401 `WWW-Authenticate: DPoP error="use_dpop_nonce"` with `DPoP-Nonce`; every answer
 *   carries the current nonce in `DPoP-Nonce`.
 *
 * Routes: `.../status/:code` answers :code after the checks; anything else echoes
 * `{ method, path, sub, jkt, body }`. `refuseToken(token)` makes a valid token refused with
 * 401 `error="invalid_token"` (as if revoked). Every request, accepted or refused, is recorded
 * with the reason of a refusal.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';

import { calculateJwkThumbprint, createRemoteJWKSet, EmbeddedJWK, jwtVerify, type JWTPayload } from 'jose';

import { closeServer, listen, originOf } from './ports.js';

export interface DpopUpstreamOptions {
  jwksUri: string;
  issuer: string;
  audience: string;
  /** Demand this upstream's own nonce in every proof. Default false. */
  requireNonce?: boolean;
  /** Accepted distance of a proof's iat from now. Default 60. */
  iatWindowSeconds?: number;
}

export interface DpopUpstreamRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** Accepted: every check passed. */
  ok: boolean;
  /** Why it was refused. */
  reason?: string;
  /** The proof's key thumbprint (checked against the token's cnf.jkt when accepted). */
  jkt?: string;
  /** The access token presented. */
  token?: string;
  sub?: string;
  at: number;
}

export interface DpopUpstream {
  url: string;
  port: number;
  requests: DpopUpstreamRequest[];
  /** The nonce proofs must carry now (requireNonce). */
  nonce: string;
  setRequireNonce(on: boolean): void;
  /** Answer every request with a use_dpop_nonce challenge and a new nonce (a misbehaving API). */
  setChallengeAlways(on: boolean): void;
  /** A new nonce: proofs with the old one are challenged. */
  rotateNonce(): void;
  /** Refuse this token with 401 invalid_token from now on (as if revoked). */
  refuseToken(token: string): void;
  close(): Promise<void>;
}

class Refused extends Error {
  constructor(
    readonly reason: string,
    readonly challenge: 'invalid_token' | 'invalid_dpop_proof' | 'use_dpop_nonce',
  ) {
    super(reason);
  }
}

const ALGORITHMS = ['ES256', 'ES384', 'EdDSA', 'Ed25519', 'PS256', 'RS256'];

export async function startDpopUpstream(opts: DpopUpstreamOptions): Promise<DpopUpstream> {
  const jwks = createRemoteJWKSet(new URL(opts.jwksUri));
  const window = opts.iatWindowSeconds ?? 60;
  const seenJti = new Set<string>();
  const refused = new Set<string>();
  const requests: DpopUpstreamRequest[] = [];
  let requireNonce = opts.requireNonce ?? false;
  let challengeAlways = false;
  let nonce = randomBytes(16).toString('base64url');
  let origin = '';

  async function verify(req: IncomingMessage, record: DpopUpstreamRequest): Promise<JWTPayload> {
    const authorization = req.headers.authorization ?? '';
    const match = /^(\S+) (\S+)$/.exec(authorization);
    if (!match) throw new Refused('no access token', 'invalid_token');
    const [, scheme, token] = match as unknown as [string, string, string];
    record.token = token;
    if (scheme.toLowerCase() !== 'dpop') throw new Refused(`a DPoP-bound token presented as ${scheme}`, 'invalid_token');
    const proofs = req.headersDistinct.dpop ?? [];
    if (proofs.length !== 1) throw new Refused(`${proofs.length} DPoP headers`, 'invalid_dpop_proof');
    const proof = proofs[0]!;
    let payload: JWTPayload;
    let jwk: Record<string, unknown>;
    try {
      const verified = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ALGORITHMS });
      payload = verified.payload;
      jwk = verified.protectedHeader.jwk as Record<string, unknown>;
    } catch (err) {
      throw new Refused(`proof not verified: ${(err as { code?: string }).code ?? String(err)}`, 'invalid_dpop_proof');
    }
    if ('d' in jwk) throw new Refused('the proof header carries a private key', 'invalid_dpop_proof');
    const jkt = await calculateJwkThumbprint(jwk);
    record.jkt = jkt;
    if (payload.htm !== req.method) throw new Refused(`htm ${String(payload.htm)} for ${req.method}`, 'invalid_dpop_proof');
    const expectedHtu = `${origin}${new URL(req.url ?? '/', origin).pathname}`;
    if (payload.htu !== expectedHtu) throw new Refused(`htu ${String(payload.htu)}, expected ${expectedHtu}`, 'invalid_dpop_proof');
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > window) throw new Refused(`iat ${String(payload.iat)} outside the window`, 'invalid_dpop_proof');
    if (typeof payload.jti !== 'string' || payload.jti.length < 16) throw new Refused('no unique jti', 'invalid_dpop_proof');
    if (seenJti.has(payload.jti)) throw new Refused('jti replayed', 'invalid_dpop_proof');
    seenJti.add(payload.jti);
    if (payload.ath !== createHash('sha256').update(token).digest('base64url')) throw new Refused('ath does not match the token', 'invalid_dpop_proof');
    if (challengeAlways) {
      nonce = randomBytes(16).toString('base64url');
      throw new Refused('nonce changed again', 'use_dpop_nonce');
    }
    if (requireNonce && payload.nonce !== nonce) throw new Refused(payload.nonce === undefined ? 'no nonce' : 'stale nonce', 'use_dpop_nonce');
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(token, jwks, { issuer: opts.issuer, audience: opts.audience }));
    } catch (err) {
      throw new Refused(`token not verified: ${(err as { code?: string }).code ?? String(err)}`, 'invalid_token');
    }
    const cnf = claims.cnf as { jkt?: unknown } | undefined;
    if (cnf?.jkt !== jkt) throw new Refused(`token cnf.jkt ${String(cnf?.jkt)} is not the proof key ${jkt}`, 'invalid_token');
    if (refused.has(token)) throw new Refused('token refused (revoked)', 'invalid_token');
    if (typeof claims.sub === 'string') record.sub = claims.sub;
    return claims;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
    const record: DpopUpstreamRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body, ok: false, at: Date.now() };
    requests.push(record);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    try {
      await verify(req, record);
    } catch (err) {
      if (!(err instanceof Refused)) throw err;
      if (requireNonce || challengeAlways) headers['dpop-nonce'] = nonce;
      record.reason = err.reason;
      headers['www-authenticate'] = `DPoP error="${err.challenge}", algs="ES256 ES384 EdDSA"`;
      // Every refusal is a 401 with a DPoP challenge (RFC 9449 §7.1).
      res.writeHead(401, headers);
      res.end(JSON.stringify({ error: err.challenge }));
      return;
    }
    record.ok = true;
    if (requireNonce) headers['dpop-nonce'] = nonce;
    const path = new URL(req.url ?? '/', origin).pathname;
    const status = /\/status\/(\d{3})$/.exec(path);
    if (status) {
      res.writeHead(Number(status[1]), headers);
      res.end(JSON.stringify({ status: Number(status[1]) }));
      return;
    }
    res.writeHead(200, headers);
    res.end(JSON.stringify({ method: record.method, path, sub: record.sub, jkt: record.jkt, body }));
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      res.statusCode = 500;
      res.end();
    });
  });
  const port = await listen(server, 0);
  origin = originOf(port);
  return {
    url: origin,
    port,
    requests,
    get nonce() {
      return nonce;
    },
    setRequireNonce(on: boolean) {
      requireNonce = on;
    },
    setChallengeAlways(on: boolean) {
      challengeAlways = on;
    },
    rotateNonce() {
      nonce = randomBytes(16).toString('base64url');
    },
    refuseToken(token: string) {
      refused.add(token);
    },
    close: () => closeServer(server),
  };
}
