import * as client from 'openid-client';
import { createRemoteJWKSet, customFetch, errors as joseErrors, importJWK, jwtVerify } from 'jose';
import type { FastifyBaseLogger } from 'fastify';
import type { Span } from '@opentelemetry/api';
import { ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVER_ADDRESS } from '@opentelemetry/semantic-conventions';
import { activeTracing, inSpan, SpanKind, type FailureDescription } from '../ops/tracing.js';
import type { OidcConfig } from '../config/types.js';
import { classifyProviderError, discoveryFailure, ProviderError, type ClassifyOptions } from './errors.js';
import { tokenSetFrom, type TokenSet } from './token-set.js';
import { LogoutTokenError, validateLogoutToken, type LogoutTokenClaims } from './logout-token.js';
import type { DpopAlgorithm, DpopKey } from './dpop.js';

export interface LoginTransaction {
  state: string;
  nonce: string;
  codeVerifier: string;
  /** The login asked for max_age: the ID token's auth_time is checked against it. */
  maxAge?: number;
  /** A prompt=none login: the provider's refusal goes back to the page, not to an error. */
  silent?: boolean;
}

/** Parameters a login may pass to the provider (checked by the caller). */
export interface LoginRequestParams {
  prompt?: string;
  login_hint?: string;
  ui_locales?: string;
  acr_values?: string;
  max_age?: string;
}

export interface OidcProviderOptions {
  config: OidcConfig;
  redirectUri: string;
  logger: FastifyBaseLogger;
  now: () => number;
  /** RFC 8707 resources asked for at login (every `routes[].resource`), so refreshes may ask for each. */
  resources?: readonly string[];
  /** oidc.dpop: the algorithm token-endpoint proofs are signed with (checked against the provider's metadata). */
  dpopAlgorithm?: DpopAlgorithm;
}

/** RFC 8693 token exchange. */
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
/** OAuth errors about the client itself: their configuration keys are the client's. */
const CLIENT_KEYS_ERRORS = new Set(['invalid_client', 'unauthorized_client']);

/** What a `token: exchange` route asks for. */
export interface ExchangeRequest {
  audience: string;
  scope?: string | undefined;
  resource?: string | undefined;
}

const DISCOVERY_BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
/**
 * A key id the cached JWKS does not know makes jose fetch the JWKS again, at most this
 * often: short enough that a provider's key rotation is picked up on the first token
 * signed with the new key, long enough that forged kids cannot hammer the provider.
 */
const JWKS_REFETCH_COOLDOWN_MS = 1000;

/**
 * How long a refresh call may run at the provider, whatever `oidc.timeoutMs` says. The
 * browser is answered (503) at `timeoutMs`, but the call goes on: a provider that
 * completes it late has already spent the refresh token, so its answer must be kept
 * rather than dropped (dropping it would make the next refresh a reuse).
 */
export function refreshHardTimeoutMs(timeoutMs: number): number {
  return Math.max(30_000, timeoutMs * 4);
}

/**
 * The only place that speaks to the OpenID provider, built on openid-client.
 * Discovery runs in the background with backoff, so the service starts (and answers
 * `/readyz` with "not ready") while the provider is still down.
 */
export class OidcProvider {
  private configuration: client.Configuration | undefined;
  private jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  private discovering: Promise<void> | undefined;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private wakeRetry: (() => void) | undefined;
  /** The provider's host, for spans. */
  private readonly issuerHost: string;
  /** The latest DPoP nonce each provider origin gave (RFC 9449 §8), used by every key's proofs. */
  private readonly dpopNonces = new Map<string, string>();
  /** openid-client's DPoP handle per key: made once per key, holding its public JWK. */
  private readonly dpopHandles = new WeakMap<DpopKey, client.DPoPHandle>();
  /** Said once: the provider answered a DPoP proof with a bearer token. */
  private warnedUnbound = false;

  constructor(private readonly options: OidcProviderOptions) {
    this.issuerHost = URL.canParse(options.config.issuer) ? new URL(options.config.issuer).hostname : '';
  }

  get ready(): boolean {
    return this.configuration !== undefined;
  }

  /** Since when the provider's answers have been outages (transient failures), until one call succeeds. */
  private failingSince: number | undefined;

  /**
   * Whether the provider answers: metadata loaded, and the last call (or a probe of its
   * discovery document, made here when the last call failed) was no outage. Readiness of
   * one app among several.
   */
  async reachable(): Promise<boolean> {
    if (!this.ready) return false;
    if (this.failingSince === undefined) return true;
    try {
      await this.discover();
      this.failingSince = undefined;
    } catch {
      // Still down.
    }
    return this.failingSince === undefined;
  }

  /** Starts discovery in the background, retrying until it succeeds or `stop()` is called. */
  start(): Promise<void> {
    this.discovering ??= this.discoverUntilReady();
    return this.discovering;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.wakeRetry?.();
  }

  private async discoverUntilReady(): Promise<void> {
    const { config, logger } = this.options;
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        this.configuration = await this.discover();
        const metadata = this.configuration.serverMetadata();
        logger.info({ issuer: config.issuer, pushedAuthorizationRequests: this.usesPar(metadata) }, 'provider metadata loaded');
        if (config.pushedAuthorizationRequests === 'always' && !metadata.pushed_authorization_request_endpoint) {
          logger.error({ check: ['oidc.pushedAuthorizationRequests'] }, PAR_MISSING);
        }
        if (config.pushedAuthorizationRequests === 'never' && metadata.require_pushed_authorization_requests) {
          logger.error({ check: ['oidc.pushedAuthorizationRequests'] }, 'the provider requires pushed authorization requests but oidc.pushedAuthorizationRequests is never: logins will fail; set it to auto');
        }
        this.checkDpopSupport(metadata);
        return;
      } catch (err) {
        const delay = DISCOVERY_BACKOFF_MS[Math.min(attempt, DISCOVERY_BACKOFF_MS.length - 1)] ?? 30000;
        // A wrong issuer or path is an error to fix, not an outage; retrying still lets a fix at the provider take effect.
        const failure = discoveryFailure(err, config.issuer);
        const fields = { issuer: config.issuer, fault: failure.configError ? 'configuration' : 'outage', reason: failure.reason, ...failure.fields, retryInMs: delay };
        (failure.configError ? logger.error : logger.warn).call(logger, fields, 'provider discovery failed');
        await new Promise<void>((resolve) => {
          this.wakeRetry = resolve;
          this.retryTimer = setTimeout(resolve, delay);
        });
      }
    }
  }

  private async discover(): Promise<client.Configuration> {
    const { config } = this.options;
    const execute = config.allowInsecureIssuer ? [client.allowInsecureRequests] : [];
    const authentication = await clientAuthentication(config);
    const configuration = await this.traced('discovery', () =>
      client.discovery(
        new URL(config.issuer),
        config.clientId,
        { redirect_uris: [this.options.redirectUri], response_types: ['code'] },
        authentication,
        { execute, timeout: config.timeoutMs / 1000 },
      ),
    );
    // Calls are cut off at the hard timeout; callers wait at most timeoutMs (see deadline()).
    configuration.timeout = refreshHardTimeoutMs(config.timeoutMs) / 1000;
    if (config.dpop) {
      // Every answer's DPoP-Nonce is remembered per provider origin, challenges included:
      // openid-client then retries a use_dpop_nonce refusal once, with the nonce.
      configuration[client.customFetch] = async (url, options) => {
        const response = await fetch(url, options as RequestInit);
        const nonce = response.headers.get('dpop-nonce');
        if (nonce) this.dpopNonces.set(new URL(url).origin, nonce);
        return response;
      };
    }
    return configuration;
  }

  /** oidc.dpop: whether the provider says it takes DPoP proofs signed with our algorithm (logged, not enforced). */
  private checkDpopSupport(metadata: client.ServerMetadata): void {
    const alg = this.options.dpopAlgorithm;
    if (!this.options.config.dpop || alg === undefined) return;
    const supported = metadata.dpop_signing_alg_values_supported;
    if (!Array.isArray(supported)) {
      this.options.logger.warn({ check: ['oidc.dpop'] }, 'oidc.dpop is on but the provider advertises no dpop_signing_alg_values_supported: it may not support DPoP, and then issues bearer tokens or refuses the proofs');
    } else if (!supported.includes(alg) && !(alg === 'EdDSA' && supported.includes('Ed25519'))) {
      this.options.logger.error({ check: ['oidc.dpop', 'oidc.dpopKeyFile'], alg, supported }, 'the provider does not accept DPoP proofs signed with our algorithm: token requests will fail; use a key the provider supports');
    }
  }

  /**
   * The DPoP option of a token-endpoint call signed with `key`: openid-client's handle,
   * made once per key, whose proofs carry the latest nonce this provider gave (whichever
   * key's call received it). openid-client answers a use_dpop_nonce refusal itself: once,
   * with the nonce of that refusal.
   */
  private async dpopOption(configuration: client.Configuration, key: DpopKey | undefined): Promise<client.DPoPOptions | undefined> {
    if (!key) return undefined;
    let handle = this.dpopHandles.get(key);
    if (!handle) {
      handle = client.getDPoPHandle(configuration, await key.cryptoKeyPair(), {
        [client.modifyAssertion]: (_header: Record<string, unknown>, payload: Record<string, unknown>) => {
          const htu = typeof payload.htu === 'string' && URL.canParse(payload.htu) ? new URL(payload.htu).origin : undefined;
          const nonce = htu === undefined ? undefined : this.dpopNonces.get(htu);
          if (nonce !== undefined) payload.nonce = nonce;
        },
      });
      this.dpopHandles.set(key, handle);
    }
    return { DPoP: handle };
  }

  /** A token set from a call that carried a DPoP proof (or not); a bearer token answered to a proof is said once. */
  private tokensFrom(response: Parameters<typeof tokenSetFrom>[0], key: DpopKey | undefined): TokenSet {
    const tokens = tokenSetFrom(response, { ...this.tokenSetDefaults(), dpop: key !== undefined });
    if (key && tokens.tokenType !== 'DPoP' && !this.warnedUnbound) {
      this.warnedUnbound = true;
      this.options.logger.warn(
        { check: ['oidc.dpop'], tokenType: tokens.tokenType },
        'the provider answered a DPoP proof with a token that is not DPoP-bound: the client may not be registered for DPoP-bound tokens (dpop_bound_access_tokens), or the provider does not support DPoP; such tokens are still sent as DPoP on dpop: true routes',
      );
    }
    return tokens;
  }

  /** A provider call in a span named `oidc <operation>` while tracing is on. */
  private traced<T>(operation: string, call: (span: Span | undefined) => Promise<T>): Promise<T> {
    return inSpan(`oidc ${operation}`, SpanKind.CLIENT, { [ATTR_SERVER_ADDRESS]: this.issuerHost, 'oidc.operation': operation }, call, describeProviderFailure).then(
      (result) => {
        this.failingSince = undefined;
        return result;
      },
      (err: unknown) => {
        // An outage (no answer, a 5xx), as opposed to an answer refusing the call.
        if (err instanceof ProviderError ? err.kind === 'transient' : true) this.failingSince ??= Date.now();
        throw err;
      },
    );
  }

  /** Answers a caller within `oidc.timeoutMs`; the call itself may go on until the hard timeout. */
  private deadline<T>(call: Promise<T>, operation: string): Promise<T> {
    return withDeadline(call, this.options.config.timeoutMs, () => new ProviderError('transient', `${operation}: provider did not answer within ${this.options.config.timeoutMs} ms`));
  }

  private requireConfiguration(operation: string): client.Configuration {
    if (!this.configuration) {
      throw new ProviderError('transient', `${operation}: provider metadata not loaded yet`);
    }
    return this.configuration;
  }

  /** Whether logins push the authorization request first (RFC 9126), per oidc.pushedAuthorizationRequests. */
  private usesPar(metadata: client.ServerMetadata): boolean {
    switch (this.options.config.pushedAuthorizationRequests) {
      case 'never':
        return false;
      case 'always':
        return true;
      case 'auto':
        return typeof metadata.pushed_authorization_request_endpoint === 'string';
    }
  }

  async startLogin(requested: LoginRequestParams = {}): Promise<{ url: string; transaction: LoginTransaction }> {
    const configuration = this.requireConfiguration('login');
    const transaction: LoginTransaction = {
      state: client.randomState(),
      nonce: client.randomNonce(),
      codeVerifier: client.randomPKCECodeVerifier(),
    };
    const merged: Record<string, string> = { ...this.options.config.authorizationParams, ...requested };
    if (merged.max_age !== undefined) transaction.maxAge = Number(merged.max_age);
    if (merged.prompt === 'none') transaction.silent = true;
    const metadata = configuration.serverMetadata();
    const par = this.usesPar(metadata);
    if (par && !metadata.pushed_authorization_request_endpoint) {
      throw new ProviderError('config_fault', PAR_MISSING, { configKeys: ['oidc.pushedAuthorizationRequests'] });
    }
    const parameters = new URLSearchParams({
      ...merged,
      redirect_uri: this.options.redirectUri,
      scope: this.options.config.scopes.join(' '),
      state: transaction.state,
      nonce: transaction.nonce,
      code_challenge: await client.calculatePKCECodeChallenge(transaction.codeVerifier),
      code_challenge_method: 'S256',
    });
    // RFC 8707: the grant covers every configured resource, so that each route's token can
    // later be asked for with the refresh token.
    for (const resource of this.options.resources ?? []) parameters.append('resource', resource);
    if (!par) return { url: client.buildAuthorizationUrl(configuration, parameters).href, transaction };
    return this.traced('pushed authorization request', async () => {
      try {
        const url = await this.deadline(client.buildAuthorizationUrlWithPAR(configuration, parameters), 'pushed authorization request');
        return { url: url.href, transaction };
      } catch (err) {
        throw await this.classify(err, 'pushed authorization request');
      }
    });
  }

  /** Validates the authorization response (state, iss, errors) and exchanges the code. */
  async finishLogin(callbackUrl: URL, transaction: LoginTransaction, dpopKey?: DpopKey): Promise<TokenSet> {
    const configuration = this.requireConfiguration('callback');
    const exchange = async () => {
      const dpop = await this.dpopOption(configuration, dpopKey);
      const response = await client.authorizationCodeGrant(configuration, callbackUrl, {
        expectedState: transaction.state,
        expectedNonce: transaction.nonce,
        pkceCodeVerifier: transaction.codeVerifier,
        idTokenExpected: true,
        ...(transaction.maxAge !== undefined ? { maxAge: transaction.maxAge } : {}),
      }, undefined, dpop);
      if (!(await this.verifyIdTokenSignature(response.id_token))) {
        throw new ProviderError('transient', 'code exchange: the provider keys could not be fetched to verify the ID token');
      }
      return this.tokensFrom(response, dpopKey);
    };
    return this.traced('code exchange', async () => {
      try {
        return await this.deadline(exchange(), 'code exchange');
      } catch (err) {
        throw await this.classify(err, 'code exchange', true);
      }
    });
  }

  /**
   * Refresh grant; `scope` narrows the request and must never widen what was granted.
   * No deadline here: the caller answers the browser at `timeoutMs` and keeps the late
   * result (see TokenRefresher). A refreshed ID token whose keys cannot be fetched right
   * now is dropped, not the refresh: its new refresh token is already the only live one.
   */
  async refresh(refreshToken: string, scope?: string, resource?: string, dpopKey?: DpopKey): Promise<TokenSet> {
    const configuration = this.requireConfiguration('refresh');
    return this.traced(resource ? 'refresh for resource' : 'refresh', async () => {
      try {
        const parameters: Record<string, string> = {};
        if (scope) parameters.scope = scope;
        if (resource) parameters.resource = resource;
        const response = await client.refreshTokenGrant(
          configuration,
          refreshToken,
          Object.keys(parameters).length > 0 ? parameters : undefined,
          await this.dpopOption(configuration, dpopKey),
        );
        const verified = await this.verifyIdTokenSignature(response.id_token);
        const tokens = this.tokensFrom(response, dpopKey);
        if (!verified) {
          this.options.logger.warn('refreshed ID token kept out: provider keys unreachable; the previous claims stay');
          delete tokens.idToken;
          delete tokens.claims;
        }
        return tokens;
      } catch (err) {
        const failure = await this.classify(err, resource ? 'refresh for resource' : 'refresh', true);
        // The resource was not granted (or is unknown to the provider): our configuration,
        // not the user's grant, is wrong; the session must not end over it.
        if (resource && failure.kind === 'invalid_grant' && (failure.oauthError === 'invalid_target' || failure.oauthError === 'invalid_scope')) {
          throw new ProviderError('config_fault', failure.message, { cause: err, oauthError: failure.oauthError, configKeys: ['routes[].resource', 'oidc.scopes'] });
        }
        throw failure;
      }
    });
  }

  /**
   * RFC 8693 token exchange: the user's access token for one with the route's audience and
   * scope. A 400 `invalid_grant` means the subject token is refused (expired or revoked):
   * the caller refreshes the user's token once and tries again.
   */
  async exchange(subjectToken: string, request: ExchangeRequest, dpopKey?: DpopKey): Promise<TokenSet> {
    const configuration = this.requireConfiguration('token exchange');
    return this.traced('token exchange', async () => {
      try {
        const parameters = new URLSearchParams({
          subject_token: subjectToken,
          subject_token_type: ACCESS_TOKEN_TYPE,
          requested_token_type: ACCESS_TOKEN_TYPE,
          audience: request.audience,
        });
        if (request.scope) parameters.set('scope', request.scope);
        if (request.resource) parameters.set('resource', request.resource);
        const dpop = await this.dpopOption(configuration, dpopKey);
        const response = await this.deadline(client.genericGrantRequest(configuration, TOKEN_EXCHANGE_GRANT, parameters, dpop), 'token exchange');
        const tokens = this.tokensFrom(response, dpopKey);
        // An exchanged token is only an access token: nothing of the session rides along.
        delete tokens.refreshToken;
        delete tokens.idToken;
        delete tokens.claims;
        return tokens;
      } catch (err) {
        const failure = await this.classify(err, 'token exchange');
        // A refused audience, scope or resource is the route's configuration (or the
        // provider's exchange policy for this client), not the provider's address.
        if (failure.kind === 'config_fault' && failure.oauthError !== undefined && !CLIENT_KEYS_ERRORS.has(failure.oauthError)) {
          throw new ProviderError('config_fault', failure.message, { cause: err, oauthError: failure.oauthError, configKeys: ['routes[].exchange', 'oidc.clientId'] });
        }
        throw failure;
      }
    });
  }

  async clientCredentials(scopes: readonly string[], dpopKey?: DpopKey): Promise<TokenSet> {
    const configuration = this.requireConfiguration('client credentials');
    return this.traced('client credentials', async () => {
      try {
        const dpop = await this.dpopOption(configuration, dpopKey);
        const response = await this.deadline(
          client.clientCredentialsGrant(configuration, scopes.length > 0 ? { scope: scopes.join(' ') } : undefined, dpop),
          'client credentials',
        );
        return this.tokensFrom(response, dpopKey);
      } catch (err) {
        throw await this.classify(err, 'client credentials');
      }
    });
  }

  /** RFC 7009 revocation where the provider offers it; false when it has no revocation endpoint. */
  async revoke(token: string, hint: 'refresh_token' | 'access_token'): Promise<boolean> {
    const configuration = this.requireConfiguration('revocation');
    if (!configuration.serverMetadata().revocation_endpoint) return false;
    return this.traced('revocation', async () => {
      try {
        await this.deadline(client.tokenRevocation(configuration, token, { token_type_hint: hint }), 'revocation');
        return true;
      } catch (err) {
        throw await this.classify(err, 'revocation');
      }
    });
  }

  /** RP-initiated logout URL, or null when the provider has no end-session endpoint (or is not loaded). */
  endSessionUrl(idTokenHint: string | undefined): string | null {
    const configuration = this.configuration;
    if (!configuration?.serverMetadata().end_session_endpoint) return null;
    const parameters: Record<string, string> = {
      post_logout_redirect_uri: this.options.config.postLogoutRedirectUri,
      client_id: this.options.config.clientId,
    };
    // The URL goes to the browser: the ID token only when the operator opted in.
    if (idTokenHint && this.options.config.logoutIdTokenHint) parameters.id_token_hint = idTokenHint;
    return client.buildEndSessionUrl(configuration, parameters).href;
  }

  /** The provider's signing keys, fetched and cached by jose, refetched on an unknown key id. */
  private signingKeys(configuration: client.Configuration, operation: string): ReturnType<typeof createRemoteJWKSet> {
    const jwksUri = configuration.serverMetadata().jwks_uri;
    if (!jwksUri) throw new ProviderError('config_fault', `${operation}: provider metadata has no jwks_uri`);
    this.jwks ??= createRemoteJWKSet(new URL(jwksUri), {
      timeoutDuration: this.options.config.timeoutMs,
      cooldownDuration: JWKS_REFETCH_COOLDOWN_MS,
      ...(activeTracing() ? { [customFetch]: (url: string, init: RequestInit) => this.fetchKeysTraced(url, init) } : {}),
    });
    return this.jwks;
  }

  /** jose's JWKS fetch, in a span (only set up while tracing is on). */
  private fetchKeysTraced(url: string, init: RequestInit): Promise<Response> {
    return this.traced('jwks fetch', async (span) => {
      const response = await fetch(url, init);
      span?.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, response.status);
      return response;
    });
  }

  /**
   * openid-client checks the ID token's claims but, for tokens from the token endpoint,
   * trusts TLS instead of the signature (OIDC Core 3.1.3.7 allows it). We check the
   * signature too: a token response that did not come from the provider's keys is refused.
   */
  /** True when verified (or there is no ID token); false when the keys could not be fetched. */
  private async verifyIdTokenSignature(idToken: string | undefined): Promise<boolean> {
    if (!idToken) return true;
    const configuration = this.requireConfiguration('ID token');
    const keys = this.signingKeys(configuration, 'ID token');
    // The issuer discovery confirmed (equal to oidc.issuer up to URL normalisation, e.g. a bare origin's trailing slash).
    const issuer = configuration.serverMetadata().issuer;
    const verify = () => jwtVerify(idToken, keys, { issuer, audience: this.options.config.clientId, clockTolerance: 30 });
    try {
      try {
        await verify();
      } catch (err) {
        // A key the provider just rotated in: fetch its keys again even within the cooldown.
        // Only for tokens that came from the token endpoint over TLS, never for tokens
        // anyone can post (logout tokens), so forged key ids cannot make us hammer the provider.
        if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err;
        await keys.reload();
        await verify();
      }
      return true;
    } catch (err) {
      if (err instanceof joseErrors.JOSEError && !(err instanceof joseErrors.JWKSTimeout)) {
        throw new ProviderError('invalid_response', `ID token signature not verified: ${err.code}`, { cause: err });
      }
      // The keys could not be fetched (timeout, network): nothing is known about the signature.
      return false;
    }
  }

  /** Validates a back-channel logout token against the provider's keys. */
  async validateLogoutToken(token: string): Promise<LogoutTokenClaims> {
    const configuration = this.requireConfiguration('back-channel logout');
    const keys = this.signingKeys(configuration, 'back-channel logout');
    try {
      return await validateLogoutToken(token, {
        issuer: configuration.serverMetadata().issuer,
        clientId: this.options.config.clientId,
        keys,
        now: this.options.now(),
        maxAgeSeconds: 300,
      });
    } catch (err) {
      if (err instanceof LogoutTokenError) throw err;
      throw await this.classify(err, 'back-channel logout keys');
    }
  }

  /** classifyProviderError with what only this class knows: which encoding switch to suggest. */
  private classify(err: unknown, operation: string, grant = false): Promise<ProviderError> {
    const options: ClassifyOptions = { grant };
    const hint = clientRefusedHint(this.options.config);
    if (hint) options.clientRefusedHint = hint;
    return classifyProviderError(err, operation, options);
  }

  private tokenSetDefaults() {
    return { now: this.options.now(), defaultAccessTokenSeconds: this.options.config.defaultAccessTokenSeconds };
  }
}

async function clientAuthentication(config: OidcConfig): Promise<client.ClientAuth> {
  switch (config.clientAuth) {
    case 'client_secret_basic':
      return config.clientSecretBasicEncoding === 'plain' ? plainClientSecretBasic(config.clientSecret) : client.ClientSecretBasic(config.clientSecret);
    case 'client_secret_post':
      return client.ClientSecretPost(config.clientSecret);
    case 'private_key_jwt': {
      const jwk = config.privateKeyJwk as Parameters<typeof importJWK>[0];
      const alg = typeof jwk.alg === 'string' ? jwk.alg : defaultAlgorithm(jwk.kty, jwk.crv);
      const key = await importJWK(jwk, alg);
      if (key instanceof Uint8Array) throw new Error('oidc.privateKeyJwk must be an asymmetric private key');
      return client.PrivateKeyJwt({ key, kid: typeof jwk.kid === 'string' ? jwk.kid : undefined });
    }
    case 'none':
      return client.None();
  }
}

/**
 * client_secret_basic without RFC 6749's form-encoding of id and secret: what providers that
 * do not form-decode the credentials expect (oidc.clientSecretBasicEncoding: plain).
 */
function plainClientSecretBasic(clientSecret: string | undefined): client.ClientAuth {
  if (!clientSecret) throw new Error('oidc.clientSecret is required for client_secret_basic');
  return (_as, metadata, _body, headers) => {
    headers.set('authorization', `Basic ${Buffer.from(`${metadata.client_id}:${clientSecret}`, 'utf8').toString('base64')}`);
  };
}

/**
 * When our client is refused: under client_secret_basic with RFC 6749 encoding, credentials
 * with characters form-encoding changes (anything but letters and digits) are the usual cause.
 */
function clientRefusedHint(config: OidcConfig): string | undefined {
  if (config.clientAuth !== 'client_secret_basic') return undefined;
  const changed = /[^A-Za-z0-9]/.test(`${config.clientId}${config.clientSecret ?? ''}`);
  if (!changed) return undefined;
  return config.clientSecretBasicEncoding === 'rfc6749'
    ? 'the client id or secret contains characters that RFC 6749 form-encoding changes (e.g. - + / : %); many providers do not decode them: try oidc.clientSecretBasicEncoding: plain (or oidc.clientAuth: client_secret_post)'
    : 'oidc.clientSecretBasicEncoding is plain; if the provider form-decodes the credentials (RFC 6749), try rfc6749 (or oidc.clientAuth: client_secret_post)';
}

/** A ProviderError's message is what the logs carry (never a token); anything else shows by name only. */
const describeProviderFailure: FailureDescription = (err) =>
  err instanceof ProviderError ? { type: err.kind, message: err.message } : { type: err instanceof Error ? err.name : 'unknown' };

const PAR_MISSING =
  'oidc.pushedAuthorizationRequests is always but the provider advertises no pushed_authorization_request_endpoint: logins cannot start; set it to auto, or enable PAR at the provider';

function defaultAlgorithm(kty: string | undefined, crv: string | undefined): string {
  if (kty === 'EC') return crv === 'P-384' ? 'ES384' : crv === 'P-521' ? 'ES512' : 'ES256';
  if (kty === 'OKP') return 'EdDSA';
  return 'RS256';
}

/** `call`, or `onTimeout()` thrown after `ms`; the call is left to finish (its late failure is swallowed). */
export function withDeadline<T>(call: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  call.catch(() => undefined);
  return Promise.race([call, expired]).finally(() => clearTimeout(timer));
}
