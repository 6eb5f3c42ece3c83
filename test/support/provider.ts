/**
 * A real `oidc-provider` (v9) OpenID Provider for integration tests, listening on 127.0.0.1.
 *
 * - Issuer: `http://127.0.0.1:PORT` (no trailing slash). Endpoints use oidc-provider's default
 *   routes: /auth, /token, /token/introspection, /token/revocation, /me, /session/end, /jwks,
 *   discovery at /.well-known/openid-configuration.
 * - Login is driven over HTTP through devInteractions (any login, any password): see
 *   `completeProviderLogin` in ./browser.ts.
 * - Clients are stored through the adapter (i.e. "dynamic" clients, not static configuration), so
 *   they can be (re-)registered at any time: `setRedirectUris()` / `updateBffClients()` /
 *   `addClient()` take effect on the very next request.
 * - All state lives in a `MemoryStore` that can be handed to a new `startProvider({ port, state })`
 *   to "restart" the provider without losing sessions, grants and tokens (a new `signingJwk` in that
 *   state is a signing-key rotation; `retiredSigningJwks` keeps old keys published).
 * - Faults the real provider cannot produce are injected in front of it, per path: `setLatency()`
 *   delays requests, `setFault()` answers them instead of the provider (an HTTP error page, a
 *   malformed body, a reset, or a synthesized token response with one thing wrong).
 */
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

import { calculateJwkThumbprint, decodeJwt as decodeJwtPayload, decodeProtectedHeader, EmbeddedJWK, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';

import type ProviderClass from 'oidc-provider';
import type { Adapter, AdapterPayload, Configuration, KoaContextWithOIDC } from 'oidc-provider';

import { closeServer, listen, originOf } from './ports.js';

export interface TestProviderOptions {
  /** Access token (and client_credentials token) lifetime. Default 60. */
  accessTokenTtlSeconds?: number;
  /**
   * Rotate refresh tokens on every use. Default true. With rotation, presenting an already used
   * refresh token makes oidc-provider revoke the whole grant (all access and refresh tokens).
   */
  rotateRefreshToken?: boolean;
  /** Default 3600. */
  refreshTokenTtlSeconds?: number;
  /** Default 3600. */
  idTokenTtlSeconds?: number;
  /** Added to every account's claims, and released in the ID token (they belong to the `openid` scope). */
  extraClaims?: Record<string, unknown>;
  /** Per-account claim overrides/additions (merged last). */
  accounts?: Record<string, Record<string, unknown>>;
  /**
   * redirect_uris of the four BFF clients. May be `[]` when the BFF port is not known yet (a
   * placeholder is registered); call `setRedirectUris()` once it is.
   */
  redirectUris: string[];
  postLogoutRedirectUris?: string[];
  /** Registered on the BFF clients (with backchannel_logout_session_required: true) when given. */
  backchannelLogoutUri?: string;
  /** Listen on this port (e.g. to restart on the same issuer). Default: a free port. */
  port?: number;
  /**
   * Mount the provider under this path (e.g. '/realms/x'): the issuer becomes
   * `http://127.0.0.1:PORT/realms/x` and every endpoint lives under it, as with Keycloak realms.
   */
  mountPath?: string;
  /**
   * Pushed Authorization Requests (RFC 9126): 'on' (oidc-provider's own default), 'required', or
   * 'off' (not in discovery). Default 'off' here, so that token-handler (oidc.pushedAuthorizationRequests:
   * auto) puts the authorization parameters in the URL that tests inspect.
   */
  pushedAuthorizationRequests?: 'on' | 'required' | 'off';
  /** Default true; false: no revocation endpoint (nor `revocation_endpoint` in discovery). */
  revocation?: boolean;
  /** Default true; false: no RP-initiated logout (no `end_session_endpoint` in discovery). */
  endSession?: boolean;
  /** Default true; false: no userinfo endpoint (no `userinfo_endpoint` in discovery). */
  userinfo?: boolean;
  /**
   * Access token format for login and refresh: 'opaque' (default; the upstream introspects) or
   * 'jwt' (signed by the provider, audience RESOURCE_SERVER, via oidc-provider's resourceIndicators).
   */
  accessTokenFormat?: 'opaque' | 'jwt';
  /**
   * RFC 8707 resource servers (oidc-provider's resourceIndicators), by resource URI: each issues
   * JWT access tokens with its own audience and scopes. The session's own token (no resource asked)
   * stays opaque (userinfo). Not with accessTokenFormat 'jwt'.
   */
  resourceServers?: Record<string, { audience: string; scope: string }>;
  /**
   * An RFC 8693 token-exchange grant, registered with `registerGrantType` and allowed to the
   * confidential BFF clients: a valid access token of the client (subject_token) is exchanged for
   * a JWT (signed with the provider's key) with the requested `audience`, if listed here, and the
   * listed scope. An unknown or inactive subject token is answered `invalid_grant`, an unknown
   * audience `invalid_target`.
   */
  tokenExchange?: {
    audiences: Record<string, { scope: string }>;
    /** Subject tokens of these accounts are always refused (`invalid_grant`), as a provider policy would. */
    refuseAccounts?: string[];
  };
  /** State of a previous instance (`provider.state`) to continue with: same store, keys and clients. */
  state?: TestProviderState;
  /**
   * acr values the provider offers (`acr_values_supported`). A login that asks for
   * `acr_values` signs the user in with the first of them the provider offers, and a provider
   * session signed in with another acr is asked to sign in again (step-up), as providers with
   * step-up flows do. A login that asks for none gets no acr. Default: none offered.
   */
  acrValues?: string[];
  /**
   * DPoP (RFC 9449; oidc-provider's features.dPoP, always on): `boundClients` registers the BFF
   * clients with dpop_bound_access_tokens (a token request without a proof is refused);
   * `requireNonce` makes every DPoP proof carry the provider's nonce (features.dPoP.nonceSecret +
   * requireNonce), so the first proof of each key is answered use_dpop_nonce.
   */
  dpop?: { boundClients?: boolean; requireNonce?: boolean };
}

export interface TokenRequestRecord {
  grantType: string;
  clientId?: string;
  /** Date.now() when the request arrived. */
  at: number;
  /** HTTP status the provider answered. */
  status: number;
  /** OAuth error code when the request failed (e.g. 'invalid_grant'). */
  error?: string;
  errorDescription?: string;
  /** Tokens the answer carried, by parameter name (access_token, refresh_token, id_token). */
  issued?: Record<string, string>;
  /** Date.now() when the answer left the provider (after any hold-back, see setAnswerDelay). */
  answeredAt?: number;
  /** refresh_token grants: a hash of the refresh token presented (to count reuse). */
  presentedRefreshToken?: string;
  /** The `resource` (RFC 8707) or `audience` (RFC 8693) asked for, when one was. */
  target?: string;
  /** RFC 7638 thumbprint of the key in the request's DPoP proof, when it carried one. */
  dpopJkt?: string;
  /** Whether the DPoP proof carried a nonce. */
  dpopNonce?: boolean;
}

const kTokenRecord = Symbol('token request record');

export interface ProviderRequestRecord {
  method: string;
  path: string;
  status: number;
  at: number;
}

/**
 * What a fault answers instead of the provider (`setFault(path, fault)`), for what the real
 * oidc-provider cannot be made to do by itself.
 */
export type ProviderFault =
  /** This HTTP answer (a string body defaults to text/html, an object to JSON). */
  | { status: number; body?: string | Record<string, unknown>; headers?: Record<string, string> }
  /** Close the connection without answering (after reading the request). */
  | { reset: true }
  /** A synthesized token-endpoint response (200): valid in every respect except what is changed here. */
  | { tokenResponse: SyntheticTokenResponse };

/**
 * A token response made up by the fault injector, NOT by oidc-provider: the refresh token presented
 * with the request is not spent (so the session can recover once the fault is cleared). By default
 * it is a well-formed response: random access and refresh tokens, `token_type: Bearer`,
 * `expires_in` = the access token TTL, the presented refresh token's scope, and an ID token with
 * `iss` = issuer, `sub` = the presented refresh token's account, `aud` = the requesting client,
 * `iat`/`exp`, signed RS256 with the provider's own signing key (same `kid`).
 * Its tokens count as issued tokens for the leak guard.
 */
export interface SyntheticTokenResponse {
  /** Top-level members to leave out, e.g. ['access_token']. */
  omit?: string[];
  /** Top-level members to set or replace, e.g. { token_type: 'mac' }. */
  set?: Record<string, unknown>;
  /**
   * The ID token: claims to set or replace (e.g. { iss: 'https://evil.example' }) and the key it is
   * signed with: 'provider' (default) or 'foreign' (a key the provider never published, but the
   * provider key's `kid` in the header: a signature that does not verify). `false`: no ID token.
   */
  idToken?: false | { claims?: Record<string, unknown>; key?: 'provider' | 'foreign' };
}

/** One HTTP answer of the real provider, as the rewriting layer sees and changes it. */
export interface ProviderHttpAnswer {
  status: number;
  /** Lower-case names; content-length is recomputed after the rewrite. */
  headers: Record<string, string>;
  body: string;
}
export type AnswerRewrite = (answer: ProviderHttpAnswer) => ProviderHttpAnswer;

/** A rewrite of a JSON answer's members (only for 200 answers; others pass unchanged). */
export function rewriteJson(change: (json: Record<string, unknown>) => Record<string, unknown>): AnswerRewrite {
  return (answer) => {
    if (answer.status !== 200) return answer;
    return { ...answer, body: JSON.stringify(change(JSON.parse(answer.body) as Record<string, unknown>)) };
  };
}

/** The audience of JWT access tokens (accessTokenFormat: 'jwt'). */
export const RESOURCE_SERVER = 'https://api.example.test';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

/**
 * RFC 8693 token exchange on oidc-provider's `registerGrantType` extension point: the subject
 * token must be an access token this client holds and still active at the provider; the answer
 * is a JWT for the requested audience, signed with the provider's key (the JWKS upstreams use).
 */
/** A JWT access token issued by this provider, as the fields the exchange grant reads (undefined when not valid). */
async function jwtSubject(token: string, signingJwk: Record<string, unknown>): Promise<{ accountId: string; clientId: string; isExpired: boolean } | undefined> {
  try {
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = signingJwk;
    const { payload } = await jwtVerify(token, await importJWK(publicJwk as JWK, 'RS256'));
    return { accountId: String(payload.sub), clientId: String(payload.client_id), isExpired: false };
  } catch {
    return undefined;
  }
}

function registerTokenExchange(
  provider: InstanceType<ProviderModule['default']>,
  errors: ProviderModule['errors'],
  options: NonNullable<TestProviderOptions['tokenExchange']>,
  signingJwk: Record<string, unknown>,
  ttlSeconds: number,
): void {
  const parameters = new Set(['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope', 'resource']);
  provider.registerGrantType(
    TOKEN_EXCHANGE_GRANT,
    async (ctx: KoaContextWithOIDC) => {
      const params = ctx.oidc.params as Record<string, string | undefined>;
      const audience = params.audience ?? '';
      if (params.subject_token_type !== 'urn:ietf:params:oauth:token-type:access_token') {
        throw new errors.InvalidRequest('subject_token_type must be urn:ietf:params:oauth:token-type:access_token');
      }
      // A JWT access token (accessTokenFormat: 'jwt') is not stored: verified with the provider's key instead.
      const subject = params.subject_token?.split('.').length === 3 ? await jwtSubject(params.subject_token, signingJwk) : params.subject_token ? await ctx.oidc.provider.AccessToken.find(params.subject_token) : undefined;
      const active = !!subject && !subject.isExpired && subject.clientId === ctx.oidc.client!.clientId;
      if (!active || !subject || options.refuseAccounts?.includes(subject.accountId)) {
        throw new errors.InvalidGrant('subject token invalid, expired or of another client');
      }
      const target = options.audiences[audience];
      if (!target) {
        throw new errors.InvalidTarget('audience not served');
      }
      // A DPoP proof binds the exchanged token to its key, as the provider's own grants do.
      const proof = ctx.get('DPoP');
      let jkt: string | undefined;
      if (proof) {
        try {
          const { protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt' });
          jkt = await calculateJwkThumbprint(protectedHeader.jwk!);
        } catch {
          throw new errors.InvalidDpopProof('invalid DPoP proof');
        }
      }
      const key = await importJWK(signingJwk as JWK, 'RS256');
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({ scope: target.scope, client_id: ctx.oidc.client!.clientId, act: { sub: ctx.oidc.client!.clientId }, ...(jkt ? { cnf: { jkt } } : {}) })
        .setProtectedHeader({ alg: 'RS256', kid: String(signingJwk.kid), typ: 'at+jwt' })
        .setIssuer(ctx.oidc.issuer)
        .setSubject(subject.accountId)
        .setAudience(audience)
        .setIssuedAt(now)
        .setExpirationTime(now + ttlSeconds)
        .setJti(randomUUID())
        .sign(key);
      ctx.body = {
        access_token: token,
        issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        token_type: jkt ? 'DPoP' : 'Bearer',
        expires_in: ttlSeconds,
        scope: target.scope,
      };
    },
    parameters,
  );
}

export interface BackchannelLogoutRecord {
  clientId: string;
  accountId: string;
  sid?: string;
  ok: boolean;
  error?: unknown;
  at: number;
}

export interface ProviderEndpoints {
  discovery: string;
  authorization: string;
  token: string;
  introspection: string;
  revocation: string;
  userinfo: string;
  endSession: string;
  jwks: string;
}

export interface ClientCredentials {
  clientId: string;
  clientSecret: string;
}

export interface TestClients {
  basic: ClientCredentials;
  post: ClientCredentials;
  jwt: { clientId: string; privateKeyJwk: Record<string, unknown>; publicKeyJwk: Record<string, unknown>; alg: 'ES256' };
  publicClient: { clientId: string };
  api: ClientCredentials;
}

export interface BffClientUris {
  redirectUris?: string[];
  postLogoutRedirectUris?: string[];
  /** `null` removes it. */
  backchannelLogoutUri?: string | null;
}

export interface TestProviderState {
  store: MemoryStore;
  /** The key ID tokens (and everything else) are signed with: a private RSA JWK with `kid`, `alg: RS256`. */
  signingJwk: Record<string, unknown>;
  /**
   * Keys published in the JWKS after the signing key, for verification only (a key rotation in
   * progress: the provider signs with the new key, the old one stays published for a while).
   */
  retiredSigningJwks?: Array<Record<string, unknown>>;
  cookieKeys: string[];
  clients: TestClients;
}

export interface TestProvider {
  /** e.g. http://127.0.0.1:PORT — exact, no trailing slash. */
  issuer: string;
  port: number;
  /** Raw oidc-provider instance (a Koa app) for advanced tests. */
  provider: ProviderClass;
  clients: TestClients;
  /** oidc-provider's endpoint URLs (default routes). */
  endpoints: ProviderEndpoints;
  /**
   * Every call to the token endpoint, successful or not (all clients, all grant types, including the
   * api client's client_credentials calls): pushed when the response is ready; `at` is the arrival time.
   */
  tokenRequests: TokenRequestRecord[];
  /** Every HTTP request the provider answered (all endpoints). */
  requests: ProviderRequestRecord[];
  /** Errors oidc-provider reported as server_error (should stay empty). */
  serverErrors: unknown[];
  /** Outcome of every back-channel logout delivery the provider attempted. */
  backchannelLogouts: BackchannelLogoutRecord[];
  /** Every access, refresh and ID token value returned by the token endpoint. */
  issuedTokens(): string[];
  /** Re-register the four BFF clients with these redirect_uris. */
  setRedirectUris(uris: string[]): Promise<void>;
  /** Re-register the four BFF clients with changed redirect / post-logout / back-channel-logout URIs. */
  updateBffClients(uris: BffClientUris): Promise<void>;
  /** Register (or replace) any client; metadata is validated by oidc-provider (throws on invalid). */
  addClient(metadata: Record<string, unknown>): Promise<void>;
  /**
   * Revoke every grant of the account: its refresh tokens, access tokens and codes become invalid
   * (next refresh → invalid_grant, introspection → active: false). Resolves with the number of grants.
   */
  revokeGrantsOf(accountId: string): Promise<number>;
  /** Invalidate only the access tokens of the account (refresh tokens keep working). Resolves with the count. */
  revokeAccessTokensOf(accountId: string): Promise<number>;
  /** Delay every request to this path (e.g. '/token') by `ms` before the provider sees it; 0 removes it. */
  setLatency(path: string, ms: number): void;
  /**
   * Hold back the provider's answers on this path: it has done the work (a refresh token is
   * spent, new tokens are issued) but its answer leaves `ms` later — a number, or a function
   * called per request (random hold-backs); 0 removes it.
   */
  setAnswerDelay(path: string, ms: number | (() => number)): void;
  /**
   * Answer every request to this path (e.g. '/token') with `fault` instead of the provider (after
   * any latency set for it); `null` removes it. For what the real provider cannot produce by itself:
   * a 5xx page, a malformed body, a synthesized token response with a bad ID token, a reset.
   */
  setFault(path: string, fault: ProviderFault | null): void;
  /**
   * A transparent rewriting layer in front of one path (e.g. endpoints paths): the real provider
   * answers, then `rewrite` changes that answer before it is sent (empty bodies, HTML, lower-case
   * token types, missing fields). For what oidc-provider cannot be configured to produce; `null` removes it.
   */
  setRewrite(path: string, rewrite: AnswerRewrite | null): void;
  /** Every request a fault answered (the provider never saw them; not in `requests`/`tokenRequests`). */
  faultedRequests: ProviderRequestRecord[];
  /** Simulate an outage: close the listener and every open connection (connections are refused). */
  pause(): Promise<void>;
  /** Listen again on the same port with the same provider instance and state. */
  resume(): Promise<void>;
  /** Close the listener for good. `state` stays usable for a new `startProvider({ port, state })`. */
  stop(): Promise<void>;
  /** Pass to `startProvider({ port, state })` to continue with the same sessions, grants, tokens, keys and clients. */
  state: TestProviderState;
}

// ---------------------------------------------------------------------------------------------
// Quieting oidc-provider's development notices ("oidc-provider NOTICE: ..." / "WARNING: ...").
// They are printed through console.info/console.warn; we drop exactly those lines.
// Set OIDC_PROVIDER_NOTICES=1 to see them.
// ---------------------------------------------------------------------------------------------
const QUIET_MARK = Symbol.for('token-handler.test.quietOidcProvider');
const NOTICE = /^(?:\u001b\[[0-9;]*m)?oidc-provider (?:NOTICE|WARNING): /;

function quietOidcProviderNotices(): void {
  if (process.env.OIDC_PROVIDER_NOTICES) return;
  const target = console as unknown as Record<PropertyKey, unknown>;
  if (target[QUIET_MARK]) return;
  target[QUIET_MARK] = true;
  for (const method of ['info', 'warn'] as const) {
    const original = console[method].bind(console);
    console[method] = (...args: unknown[]) => {
      if (typeof args[0] === 'string' && NOTICE.test(args[0])) return;
      original(...args);
    };
  }
}

type ProviderModule = typeof import('oidc-provider');
let providerModule: Promise<ProviderModule> | undefined;
function loadProvider(): Promise<ProviderModule> {
  // Imported lazily so the filter is in place before the module-level "Unsupported runtime" notice.
  quietOidcProviderNotices();
  providerModule ??= import('oidc-provider');
  return providerModule;
}

// ---------------------------------------------------------------------------------------------
// Storage adapter
// ---------------------------------------------------------------------------------------------
interface Entry {
  model: string;
  id: string;
  payload: AdapterPayload;
  expiresAt: number;
}

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

const epoch = () => Math.floor(Date.now() / 1000);

/**
 * In-memory storage for oidc-provider (like its built-in MemoryAdapter, but without the
 * 1000-entry LRU limit, inspectable, and reusable across provider instances).
 * Payloads are stored as structured clones, like a real database would.
 */
export class MemoryStore {
  /** Entries are kept `clockTolerance` seconds past their expiry, as oidc-provider's adapter does. */
  constructor(private readonly clockToleranceSeconds = 15) {}

  private readonly entries = new Map<string, Entry>();
  private readonly byGrant = new Map<string, Set<string>>();
  private readonly sessionByUid = new Map<string, string>();
  private readonly byUserCode = new Map<string, string>();

  private static key(model: string, id: string): string {
    return `${model}:${id}`;
  }

  private live(key: string): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry && entry.expiresAt <= Date.now()) {
      this.remove(key);
      return undefined;
    }
    return entry;
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    const { grantId, uid, userCode } = entry.payload;
    if (grantId && GRANTABLE.has(entry.model)) {
      const members = this.byGrant.get(grantId);
      members?.delete(key);
      if (members?.size === 0) this.byGrant.delete(grantId);
    }
    if (entry.model === 'Session' && uid && this.sessionByUid.get(uid) === entry.id) this.sessionByUid.delete(uid);
    if (userCode && this.byUserCode.get(userCode) === key) this.byUserCode.delete(userCode);
  }

  /** Current payload (a copy) of one stored object, e.g. `get('RefreshToken', value)`. */
  get(model: string, id: string): AdapterPayload | undefined {
    const entry = this.live(MemoryStore.key(model, id));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  /** All live objects of a model (copies). */
  list(model: string): Array<{ id: string; payload: AdapterPayload }> {
    const out: Array<{ id: string; payload: AdapterPayload }> = [];
    for (const [key, entry] of [...this.entries]) {
      if (entry.model !== model || !this.live(key)) continue;
      out.push({ id: entry.id, payload: structuredClone(entry.payload) });
    }
    return out;
  }

  delete(model: string, id: string): void {
    this.remove(MemoryStore.key(model, id));
  }

  /** Delete every token of the grant and the grant itself. */
  revokeGrant(grantId: string): void {
    for (const key of [...(this.byGrant.get(grantId) ?? [])]) this.remove(key);
    this.byGrant.delete(grantId);
    this.remove(MemoryStore.key('Grant', grantId));
  }

  get size(): number {
    return this.entries.size;
  }

  /** The adapter factory to hand to oidc-provider's `adapter` option. */
  readonly adapterFactory = (model: string): Adapter => {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const store = this;
    const k = (id: string) => MemoryStore.key(model, id);
    return {
      async upsert(id, payload, expiresIn) {
        const key = k(id);
        store.remove(key);
        const expiresAt =
          typeof expiresIn === 'number' ? Date.now() + (expiresIn + store.clockToleranceSeconds) * 1000 : Infinity;
        const copy = structuredClone(payload);
        store.entries.set(key, { model, id, payload: copy, expiresAt });
        if (copy.grantId && GRANTABLE.has(model)) {
          let members = store.byGrant.get(copy.grantId);
          if (!members) store.byGrant.set(copy.grantId, (members = new Set()));
          members.add(key);
        }
        if (model === 'Session' && copy.uid) store.sessionByUid.set(copy.uid, id);
        if (copy.userCode) store.byUserCode.set(copy.userCode, key);
      },
      async find(id) {
        const entry = store.live(k(id));
        return entry ? structuredClone(entry.payload) : undefined;
      },
      async findByUid(uid) {
        const id = store.sessionByUid.get(uid);
        if (id === undefined) return undefined;
        const entry = store.live(k(id));
        return entry ? structuredClone(entry.payload) : undefined;
      },
      async findByUserCode(userCode) {
        const key = store.byUserCode.get(userCode);
        const entry = key === undefined ? undefined : store.live(key);
        return entry ? structuredClone(entry.payload) : undefined;
      },
      async consume(id) {
        const entry = store.live(k(id));
        if (entry) entry.payload.consumed = epoch();
      },
      async destroy(id) {
        store.remove(k(id));
      },
      async revokeByGrantId(grantId) {
        for (const key of [...(store.byGrant.get(grantId) ?? [])]) {
          if (store.entries.get(key)?.model === model) store.remove(key);
        }
      },
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------
let rsaSigningJwk: Record<string, unknown> | undefined;
function providerSigningJwk(): Record<string, unknown> {
  // RSA key generation takes ~100 ms: one key per test process is enough.
  if (!rsaSigningJwk) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    rsaSigningJwk = { ...privateKey.export({ format: 'jwk' }), kid: `op-${randomUUID()}`, use: 'sig', alg: 'RS256' };
  }
  return rsaSigningJwk;
}

/** A new RSA signing key (private JWK, fresh `kid`) for a provider key rotation: `state: { ...old.state, signingJwk }`. */
export function newSigningJwk(): Record<string, unknown> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `op-${randomUUID()}`, use: 'sig', alg: 'RS256' };
}

let foreignJwk: Record<string, unknown> | undefined;
/** A key no provider ever publishes (fault injection: ID tokens whose signature does not verify). */
function foreignSigningJwk(): Record<string, unknown> {
  foreignJwk ??= newSigningJwk();
  return foreignJwk;
}

/**
 * The rewriting layer: holds back what the provider writes to `res`, then sends `rewrite`'s
 * version of that answer instead (status, headers, body; content-length recomputed).
 */
function interceptAnswer(res: ServerResponse, rewrite: AnswerRewrite): void {
  const chunks: Buffer[] = [];
  const originalEnd = res.end.bind(res);
  const collect = (chunk: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  };
  res.write = ((chunk: unknown) => {
    collect(chunk);
    return true;
  }) as ServerResponse['write'];
  res.end = ((chunk?: unknown) => {
    collect(chunk);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(res.getHeaders())) if (value !== undefined) headers[name] = String(value);
    delete headers['content-length'];
    const answer = rewrite({ status: res.statusCode, headers, body: Buffer.concat(chunks).toString('utf8') });
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    res.statusCode = answer.status;
    for (const [name, value] of Object.entries(answer.headers)) res.setHeader(name, value);
    res.setHeader('content-length', Buffer.byteLength(answer.body));
    return originalEnd(answer.body);
  }) as ServerResponse['end'];
}

function readRequestBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function ecClientKeyPair(): { privateKeyJwk: Record<string, unknown>; publicKeyJwk: Record<string, unknown> } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = `client-${randomUUID()}`;
  return {
    privateKeyJwk: { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' },
    publicKeyJwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' },
  };
}

const secret = () => randomBytes(32).toString('base64url');

function newClients(): TestClients {
  return {
    basic: { clientId: 'bff-basic', clientSecret: secret() },
    post: { clientId: 'bff-post', clientSecret: secret() },
    jwt: { clientId: 'bff-jwt', ...ecClientKeyPair(), alg: 'ES256' },
    publicClient: { clientId: 'bff-public' },
    api: { clientId: 'api', clientSecret: secret() },
  };
}

/** Registered when no redirect URI is known yet; nothing listens there. */
export const PLACEHOLDER_REDIRECT_URI = 'http://127.0.0.1:9/redirect-uri-not-set';

// ---------------------------------------------------------------------------------------------
// HTML pages (custom versions of the defaults, mainly so the defaults do not print notices)
// ---------------------------------------------------------------------------------------------
const esc = (value: unknown) =>
  String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const page = (title: string, body: string) =>
  `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;

function basicAuthClientId(header: string | undefined): string | undefined {
  if (!header?.toLowerCase().startsWith('basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const id = decoded.slice(0, Math.max(decoded.indexOf(':'), 0));
  try {
    return decodeURIComponent(id.replace(/\+/g, ' ')) || undefined;
  } catch {
    return id || undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// startProvider
// ---------------------------------------------------------------------------------------------
/** Every provider started in this test file: the leak guard checks the tokens they issued. */
export const startedProviders: TestProvider[] = [];

export async function startProvider(opts: TestProviderOptions): Promise<TestProvider> {
  const { default: Provider, errors, interactionPolicy } = await loadProvider();

  const accessTtl = opts.accessTokenTtlSeconds ?? 60;
  const refreshTtl = opts.refreshTokenTtlSeconds ?? 3600;
  const idTtl = opts.idTokenTtlSeconds ?? 3600;
  const extraClaims = opts.extraClaims ?? {};

  const state: TestProviderState = opts.state ?? {
    store: new MemoryStore(),
    signingJwk: providerSigningJwk(),
    cookieKeys: [secret()],
    clients: newClients(),
  };
  const { store, clients } = state;

  // Listen first: the issuer has to contain the port, and the provider needs the issuer.
  let app: ((req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void) | undefined;
  // Fault injection the real provider cannot do by itself: extra latency and faults per path.
  const latency = new Map<string, number>();
  const answerDelays = new Map<string, number | (() => number)>();
  const faults = new Map<string, ProviderFault>();
  const faultedRequests: ProviderRequestRecord[] = [];
  const rewrites = new Map<string, AnswerRewrite>();
  let answerFault: ((req: IncomingMessage, res: ServerResponse, fault: ProviderFault) => Promise<void>) | undefined;
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://provider.invalid').pathname;
    const at = Date.now();
    const handle = () => {
      const fault = faults.get(path);
      const rewrite = rewrites.get(path);
      if (!fault && rewrite) interceptAnswer(res, rewrite);
      if (mountPath && (req.url === mountPath || req.url?.startsWith(`${mountPath}/`) || req.url?.startsWith(`${mountPath}?`))) {
        // As a path-mounting router would: oidc-provider derives its mount path from originalUrl.
        (req as IncomingMessage & { originalUrl?: string }).originalUrl = req.url;
        req.url = req.url.slice(mountPath.length) || '/';
        if (!req.url.startsWith('/')) req.url = `/${req.url}`;
      }
      if (fault && answerFault) {
        answerFault(req, res, fault)
          .catch(() => res.destroy())
          .finally(() => faultedRequests.push({ method: req.method ?? 'GET', path, status: res.statusCode, at }));
      } else if (app) app(req, res);
      else {
        res.statusCode = 503;
        res.end();
      }
    };
    const answerDelay = answerDelays.get(path);
    const holdBack = typeof answerDelay === 'function' ? answerDelay() : (answerDelay ?? 0);
    // The provider's answer is complete when it calls end(); only its delivery may wait.
    const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
    res.end = ((...args: unknown[]) => {
      const deliver = () => {
        const record = (res as { [kTokenRecord]?: TokenRequestRecord })[kTokenRecord];
        if (record) record.answeredAt = Date.now();
        end(...args);
      };
      if (holdBack > 0) setTimeout(deliver, holdBack);
      else deliver();
      return res;
    }) as typeof res.end;
    const delay = latency.get(path) ?? 0;
    if (delay > 0) setTimeout(handle, delay);
    else handle();
  });
  const port = await listen(server, opts.port ?? 0);
  const mountPath = opts.mountPath?.replace(/\/$/, '') ?? '';
  const issuer = `${originOf(port)}${mountPath}`;

  // Claims of extraClaims and of per-account overrides are released in the ID token.
  const claimNames = [...new Set([...Object.keys(extraClaims), ...Object.values(opts.accounts ?? {}).flatMap((claims) => Object.keys(claims))])].filter((name) => name !== 'sub');

  // Step-up: a provider session whose acr is not one of the requested acr_values signs in again.
  const offeredAcr = opts.acrValues ?? [];
  const requestedAcr = (acrValues: unknown): string | undefined =>
    typeof acrValues === 'string' ? acrValues.split(' ').find((value) => offeredAcr.includes(value)) : undefined;
  const policy = interactionPolicy.base();
  policy.get('login').checks.add(
    new interactionPolicy.Check('acr_values', 'requested acr not obtained', 'login_required', (ctx: KoaContextWithOIDC) => {
      const wanted = requestedAcr(ctx.oidc.params?.acr_values);
      return wanted !== undefined && ctx.oidc.session.accountId !== undefined && ctx.oidc.acr !== wanted && !ctx.oidc.result?.login;
    }),
  );

  const configuration: Configuration = {
    adapter: store.adapterFactory,
    acrValues: offeredAcr,
    interactions: { policy },
    // The first key signs; retired keys stay published for verification (a rotation in progress).
    jwks: { keys: [state.signingJwk, ...(state.retiredSigningJwks ?? [])] },
    cookies: {
      keys: state.cookieKeys,
      // Plain http: no `secure` (oidc-provider only sets it when the request is https anyway).
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    claims: {
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
      // Claims of the `openid` scope are always released in the ID token, even with
      // conformIdTokenClaims: true; extraClaims go here.
      openid: ['sub', ...claimNames],
      profile: ['name'],
      email: ['email', 'email_verified'],
    },
    // Release the profile/email claims in the ID token too (not only at userinfo).
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      ...(opts.dpop
        ? { dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => opts.dpop?.requireNonce === true } }
        : {}),
      pushedAuthorizationRequests: {
        enabled: (opts.pushedAuthorizationRequests ?? 'off') !== 'off',
        requirePushedAuthorizationRequests: opts.pushedAuthorizationRequests === 'required',
      },
      ...(opts.resourceServers
        ? {
            resourceIndicators: {
              enabled: true,
              // The session's own token is asked with no resource (or with all of them at the code
              // exchange): none is chosen, and it is an opaque userinfo token.
              defaultResource: () => undefined,
              useGrantedResource: () => true,
              getResourceServerInfo: (_ctx: unknown, resource: string) => {
                const server = opts.resourceServers?.[resource];
                if (!server) throw new errors.InvalidTarget();
                return { scope: server.scope, audience: server.audience, accessTokenFormat: 'jwt', accessTokenTTL: accessTtl };
              },
            },
          }
        : {}),
      ...(opts.accessTokenFormat === 'jwt'
        ? {
            resourceIndicators: {
              enabled: true,
              defaultResource: () => RESOURCE_SERVER,
              useGrantedResource: () => true,
              getResourceServerInfo: () => ({ scope: 'openid offline_access profile email', audience: RESOURCE_SERVER, accessTokenFormat: 'jwt', accessTokenTTL: accessTtl }),
            },
          }
        : {}),
      revocation: {
        enabled: opts.revocation ?? true,
        async allowedPolicy(_ctx: unknown, client: { clientId: string; clientAuthMethod: string }, token: { clientId: string }) {
          // Same as the default policy (which prints a notice).
          if (token.clientId !== client.clientId) {
            if (client.clientAuthMethod === 'none') return false;
            throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      introspection: {
        enabled: true,
        async allowedPolicy(
          ctx: { oidc: { client: { clientId: string } } },
          client: { clientAuthMethod: string },
          token: { clientId: string },
        ) {
          // Any confidential client (notably `api`) may introspect any token.
          return !(client.clientAuthMethod === 'none' && token.clientId !== ctx.oidc.client.clientId);
        },
      },
      clientCredentials: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: opts.endSession ?? true,
        async logoutSource(ctx: KoaContextWithOIDC, form: string) {
          ctx.type = 'html';
          ctx.body = page(
            'Logout Request',
            `<h1>Do you want to sign-out from ${esc(ctx.host)}?</h1>${form}` +
              '<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>' +
              '<button type="submit" form="op.logoutForm">No, stay signed in</button>',
          );
        },
        async postLogoutSuccessSource(ctx: KoaContextWithOIDC) {
          ctx.type = 'html';
          ctx.body = page('Sign-out Success', '<h1>Sign-out Success</h1>');
        },
      },
      userinfo: { enabled: opts.userinfo ?? true },
    },
    pkce: { required: () => true },
    // Every client that may use the refresh_token grant gets a refresh token, no offline_access /
    // prompt=consent needed. (Without offline_access, oidc-provider binds the refresh token to the
    // provider session: it dies when the user logs out at the provider.)
    async issueRefreshToken(_ctx: unknown, client: { grantTypeAllowed(grant: string): boolean }) {
      return client.grantTypeAllowed('refresh_token');
    },
    rotateRefreshToken: opts.rotateRefreshToken ?? true,
    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      IdToken: idTtl,
      RefreshToken: refreshTtl,
      AuthorizationCode: 60,
      Interaction: 3600,
      Session: Math.max(14 * 24 * 3600, refreshTtl),
      Grant: Math.max(14 * 24 * 3600, refreshTtl),
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
    },
    async findAccount(_ctx: unknown, sub: string) {
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            name: `User ${sub}`,
            email: `${sub}@example.test`,
            email_verified: true,
            ...extraClaims,
            ...opts.accounts?.[sub],
          };
        },
      };
    },
    clientBasedCORS: () => false,
    async renderError(ctx: KoaContextWithOIDC, out: Record<string, string>) {
      ctx.type = 'html';
      ctx.body = page(
        'oops! something went wrong',
        `<h1>oops! something went wrong</h1>${Object.entries(out)
          .map(([key, value]) => `<pre data-key="${esc(key)}"><strong>${esc(key)}</strong>: ${esc(value)}</pre>`)
          .join('')}`,
      );
    },
    // oidc-provider's outgoing requests (back-channel logout) go through an SSRF-protecting undici
    // dispatcher that refuses loopback addresses. Tests run everything on 127.0.0.1: drop it.
    fetch: (url: string | URL, options: RequestInit & { dispatcher?: unknown }) => {
      const { dispatcher: _dispatcher, ...rest } = options;
      return fetch(url, rest);
    },
  };

  const provider = new Provider(issuer, configuration);
  if (opts.tokenExchange) registerTokenExchange(provider, errors, opts.tokenExchange, state.signingJwk, accessTtl);
  // devInteractions sign in without an acr: use the one the login asked for (see acrValues).
  const interactionFinished = provider.interactionFinished.bind(provider);
  provider.interactionFinished = async (req: IncomingMessage, res: ServerResponse, result: Record<string, Record<string, unknown>>, options?: { mergeWithLastSubmission?: boolean }) => {
    if (result.login && result.login.acr === undefined) {
      const acr = requestedAcr((await provider.interactionDetails(req, res)).params.acr_values);
      if (acr !== undefined) result.login.acr = acr;
    }
    return interactionFinished(req, res, result, options);
  };

  // ---- recording -------------------------------------------------------------------------
  const tokenRequests: TokenRequestRecord[] = [];
  const requests: ProviderRequestRecord[] = [];
  const serverErrors: unknown[] = [];
  const issued: string[] = [];
  // Koa sees paths below the mount path.
  const tokenPath = new URL(provider.urlFor('token')).pathname.slice(mountPath.length);

  const backchannelLogouts: BackchannelLogoutRecord[] = [];
  provider.on('server_error', (_ctx: unknown, err: unknown) => serverErrors.push(err));
  provider.on('backchannel.success', (_ctx: unknown, c: { clientId: string }, accountId: string, sid?: string) =>
    backchannelLogouts.push({ clientId: c.clientId, accountId, ...(sid ? { sid } : {}), ok: true, at: Date.now() }),
  );
  provider.on('backchannel.error', (_ctx: unknown, error: unknown, c: { clientId: string }, accountId: string, sid?: string) =>
    backchannelLogouts.push({ clientId: c.clientId, accountId, ...(sid ? { sid } : {}), ok: false, error, at: Date.now() }),
  );

  provider.use(async (ctx, next) => {
    const at = Date.now();
    try {
      await next();
    } finally {
      requests.push({ method: ctx.method, path: ctx.path, status: ctx.status, at });
      if (ctx.method === 'POST' && ctx.path === tokenPath) {
        let grantType = 'unknown';
        let clientId: string | undefined;
        try {
          const oidc = ctx.oidc;
          grantType = oidc?.params?.grant_type ?? oidc?.body?.grant_type ?? grantType;
          clientId = oidc?.client?.clientId ?? oidc?.params?.client_id ?? oidc?.body?.client_id;
        } catch {
          // context not (fully) built: keep the defaults
        }
        clientId ??= basicAuthClientId(ctx.get('authorization'));
        const body = ctx.body as Record<string, unknown> | undefined;
        const record: TokenRequestRecord = { grantType, at, status: ctx.status };
        if (clientId !== undefined) record.clientId = clientId;
        try {
          const params = (ctx.oidc?.params ?? {}) as Record<string, unknown>;
          if (typeof params.refresh_token === 'string') record.presentedRefreshToken = createHash('sha256').update(params.refresh_token).digest('base64url');
          const proof = ctx.get('DPoP');
          if (proof) {
            const jwk = decodeProtectedHeader(proof).jwk;
            if (jwk) record.dpopJkt = await calculateJwkThumbprint(jwk);
            record.dpopNonce = typeof decodeJwtPayload(proof).nonce === 'string';
          }
          const target = params.resource ?? params.audience;
          if (typeof target === 'string') record.target = target;
        } catch {
          // context not (fully) built
        }
        if (ctx.status >= 400 && body && typeof body === 'object') {
          if (typeof body.error === 'string') record.error = body.error;
          if (typeof body.error_description === 'string') record.errorDescription = body.error_description;
        }
        tokenRequests.push(record);
        (ctx.res as { [kTokenRecord]?: TokenRequestRecord })[kTokenRecord] = record;
        if (ctx.status === 200 && body && typeof body === 'object') {
          record.issued = {};
          for (const name of ['access_token', 'refresh_token', 'id_token']) {
            const value = body[name];
            if (typeof value === 'string') {
              issued.push(value);
              record.issued[name] = value;
            }
          }
        }
      }
    }
  });

  // ---- clients -----------------------------------------------------------------------------
  const uris: Required<Omit<BffClientUris, 'backchannelLogoutUri'>> & { backchannelLogoutUri: string | null } = {
    redirectUris: opts.redirectUris,
    postLogoutRedirectUris: opts.postLogoutRedirectUris ?? [],
    backchannelLogoutUri: opts.backchannelLogoutUri ?? null,
  };

  async function addClient(metadata: Record<string, unknown>): Promise<void> {
    // Validates like dynamic registration would; throws InvalidClientMetadata on bad metadata.
    const client = new provider.Client(metadata);
    await provider.Client.adapter.upsert(client.clientId, client.metadata());
  }

  function bffClientMetadata(): Array<Record<string, unknown>> {
    const common = {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      application_type: 'web',
      redirect_uris: uris.redirectUris.length ? uris.redirectUris : [PLACEHOLDER_REDIRECT_URI],
      post_logout_redirect_uris: uris.postLogoutRedirectUris,
      ...(uris.backchannelLogoutUri
        ? { backchannel_logout_uri: uris.backchannelLogoutUri, backchannel_logout_session_required: true }
        : {}),
      ...(opts.dpop?.boundClients ? { dpop_bound_access_tokens: true } : {}),
    };
    // Confidential BFF clients may also fetch client-credentials tokens (routes with token: client).
    const confidential = {
      ...common,
      grant_types: [...common.grant_types, 'client_credentials', ...(opts.tokenExchange ? [TOKEN_EXCHANGE_GRANT] : [])],
    };
    return [
      {
        ...confidential,
        client_id: clients.basic.clientId,
        client_secret: clients.basic.clientSecret,
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        ...confidential,
        client_id: clients.post.clientId,
        client_secret: clients.post.clientSecret,
        token_endpoint_auth_method: 'client_secret_post',
      },
      {
        ...confidential,
        client_id: clients.jwt.clientId,
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: clients.jwt.alg,
        jwks: { keys: [clients.jwt.publicKeyJwk] },
      },
      { ...common, client_id: clients.publicClient.clientId, token_endpoint_auth_method: 'none' },
    ];
  }

  async function updateBffClients(patch: BffClientUris): Promise<void> {
    if (patch.redirectUris) uris.redirectUris = patch.redirectUris;
    if (patch.postLogoutRedirectUris) uris.postLogoutRedirectUris = patch.postLogoutRedirectUris;
    if (patch.backchannelLogoutUri !== undefined) uris.backchannelLogoutUri = patch.backchannelLogoutUri;
    for (const metadata of bffClientMetadata()) await addClient(metadata);
  }

  await updateBffClients({});
  await addClient({
    client_id: clients.api.clientId,
    client_secret: clients.api.clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  });

  // ---- fault injection ---------------------------------------------------------------------
  async function synthesizeTokenResponse(req: IncomingMessage, spec: SyntheticTokenResponse): Promise<Record<string, unknown>> {
    const params = new URLSearchParams((await readRequestBody(req)).toString('utf8'));
    const clientId = params.get('client_id') ?? basicAuthClientId(req.headers.authorization) ?? clients.basic.clientId;
    const presented = params.get('refresh_token');
    const grant = presented ? store.get('RefreshToken', presented) : undefined;
    const now = epoch();
    const response: Record<string, unknown> = {
      access_token: randomBytes(32).toString('base64url'),
      token_type: 'Bearer',
      expires_in: accessTtl,
      refresh_token: randomBytes(32).toString('base64url'),
      scope: typeof grant?.scope === 'string' ? grant.scope : 'openid offline_access profile email',
    };
    if (spec.idToken !== false) {
      const claims = {
        iss: issuer,
        sub: typeof grant?.accountId === 'string' ? grant.accountId : 'alice',
        aud: clientId,
        iat: now,
        exp: now + idTtl,
        ...spec.idToken?.claims,
      };
      const signWith = spec.idToken?.key === 'foreign' ? foreignSigningJwk() : state.signingJwk;
      const key = await importJWK(signWith as Parameters<typeof importJWK>[0], 'RS256');
      response.id_token = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: String(state.signingJwk.kid), typ: 'JWT' })
        .sign(key);
    }
    for (const name of spec.omit ?? []) delete response[name];
    Object.assign(response, spec.set);
    for (const name of ['access_token', 'refresh_token', 'id_token']) {
      const value = response[name];
      if (typeof value === 'string') issued.push(value);
    }
    return response;
  }

  answerFault = async (req, res, fault) => {
    if ('reset' in fault) {
      await readRequestBody(req);
      res.destroy();
      return;
    }
    if ('tokenResponse' in fault) {
      const body = JSON.stringify(await synthesizeTokenResponse(req, fault.tokenResponse));
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    await readRequestBody(req);
    const body = fault.body === undefined ? '' : typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body);
    const contentType = typeof fault.body === 'object' ? 'application/json; charset=utf-8' : 'text/html; charset=utf-8';
    res.writeHead(fault.status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), ...fault.headers });
    res.end(body);
  };

  // ---- listener ----------------------------------------------------------------------------
  app = provider.callback();
  let paused = false;
  let stopped = false;

  async function revokeAccessTokensOf(accountId: string): Promise<number> {
    let count = 0;
    for (const model of ['AccessToken']) {
      for (const { id, payload } of store.list(model)) {
        if (payload.accountId === accountId) {
          store.delete(model, id);
          count++;
        }
      }
    }
    return count;
  }

  // A disabled feature has no route: its default path is given anyway (requests to it get 404).
  const urlFor = (name: string, fallback: string) => {
    try {
      return provider.urlFor(name);
    } catch {
      return `${issuer}${fallback}`;
    }
  };
  const endpoints: ProviderEndpoints = {
    discovery: `${issuer}/.well-known/openid-configuration`,
    authorization: provider.urlFor('authorization'),
    token: provider.urlFor('token'),
    introspection: provider.urlFor('introspection'),
    revocation: urlFor('revocation', '/token/revocation'),
    userinfo: urlFor('userinfo', '/me'),
    endSession: urlFor('end_session', '/session/end'),
    jwks: provider.urlFor('jwks'),
  };

  const testProvider: TestProvider = {
    issuer,
    port,
    endpoints,
    provider,
    clients,
    tokenRequests,
    requests,
    serverErrors,
    backchannelLogouts,
    state,
    issuedTokens: () => [...issued],
    setLatency: (path, ms) => {
      if (ms > 0) latency.set(path, ms);
      else latency.delete(path);
    },
    setAnswerDelay: (path, ms) => {
      if (typeof ms === 'function' || ms > 0) answerDelays.set(path, ms);
      else answerDelays.delete(path);
    },
    setRewrite: (path, rewrite) => {
      if (rewrite) rewrites.set(path, rewrite);
      else rewrites.delete(path);
    },
    setFault: (path, fault) => {
      if (fault) faults.set(path, fault);
      else faults.delete(path);
    },
    faultedRequests,
    setRedirectUris: (redirectUris) => updateBffClients({ redirectUris }),
    updateBffClients,
    addClient,
    async revokeGrantsOf(accountId) {
      const grants = store.list('Grant').filter(({ payload }) => payload.accountId === accountId);
      for (const { id } of grants) store.revokeGrant(id);
      return grants.length;
    },
    revokeAccessTokensOf,
    async pause() {
      if (paused || stopped) return;
      paused = true;
      await closeServer(server);
    },
    async resume() {
      if (!paused || stopped) return;
      await listen(server, port);
      paused = false;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await closeServer(server);
    },
  };
  startedProviders.push(testProvider);
  return testProvider;
}

/** Whether the provider still accepts a token (RFC 7662 introspection, as the API client). */
export async function isTokenActive(provider: TestProvider, token: string): Promise<boolean> {
  const { clientId, clientSecret } = provider.clients.api;
  const response = await fetch(provider.endpoints.introspection, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  return ((await response.json()) as { active: boolean }).active;
}
