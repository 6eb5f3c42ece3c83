import type { FastifyReply, FastifyRequest } from 'fastify';
import { andThen, type Awaitable } from '../awaitable.js';
import type { RouteConfig } from '../config/types.js';
import { answerProviderFailure } from '../failures.js';
import { ProviderError } from '../oidc/errors.js';
import type { LoadedSession } from '../session/manager.js';
import type { ApiToken } from '../state/record.js';
import type { ClientTokens } from '../tokens/client-tokens.js';
import type { ExchangeTokens, ExchangedToken } from '../tokens/exchange-tokens.js';
import type { RefreshWant } from '../tokens/refresher.js';
import type { SessionTokens } from '../tokens/session-tokens.js';
import { accessTokenHash, type DpopKey, type DpopKeys } from '../oidc/dpop.js';
import { loginRequired } from '../errors.js';

/** What a proxied call carries to its upstream: the Authorization value, and what it was made from. */
export interface Credential {
  readonly authorization: string;
  /**
   * `dpop: true` routes: a fresh DPoP proof for one upstream request (RFC 9449 §7), made
   * per request (replays included) with the URL actually called and the upstream's nonce.
   */
  proof?(htm: string, htu: string, nonce: string | undefined): string;
}

/**
 * Where a route's token comes from, chosen once per route (`routes[].token`). A new kind
 * of token (a resource-specific one, an exchanged one, a sender-constrained one) is a new
 * source; the proxy itself does not change.
 */
export interface TokenSource<C extends Credential = Credential> {
  /** Whether callers need a session (checked before a request body is read, too). */
  readonly needsSession: boolean;
  /**
   * The credential for this call, or undefined for a call sent without one. Throws (or
   * rejects with) a BrowserError when there is none to be had. A value, not a promise,
   * when everything it needs is in memory: the usual proxied request waits for nothing.
   */
  authorize(request: FastifyRequest, reply: FastifyReply): Awaitable<C | undefined>;
  /**
   * After the upstream refused `rejected` with a 401: a new credential to replay the call
   * with, or null when this token must not be renewed again (the 401 is passed on).
   */
  renew(request: FastifyRequest, reply: FastifyReply, rejected: C): Promise<C> | null;
}

export interface TokenSourceDeps {
  sessionTokens: SessionTokens;
  clientTokens: ClientTokens;
  exchangeTokens: ExchangeTokens;
  retryAfterSeconds: number;
  /** oidc.dpop: which key each token is bound to. */
  dpopKeys?: DpopKeys | undefined;
}

/** The token source of a route: on `dpop: true` routes, sent with a DPoP proof per request. */
export function tokenSourceFor(route: RouteConfig, deps: TokenSourceDeps): TokenSource {
  const source = baseSourceFor(route, deps);
  if (!route.dpop) return source;
  if (!deps.dpopKeys) throw new Error(`route ${route.prefix}: dpop: true needs oidc.dpop: true`);
  return new DpopTokenSource(source, deps.dpopKeys);
}

function baseSourceFor(route: RouteConfig, deps: TokenSourceDeps): TokenSource {
  switch (route.token) {
    case 'user':
      return route.resource === undefined ? new UserTokenSource(deps.sessionTokens) : new ResourceTokenSource(route.resource, deps.sessionTokens);
    case 'client':
      return new ClientTokenSource(route, deps);
    case 'exchange':
      if (!route.exchange) throw new Error(`route ${route.prefix}: token: exchange needs exchange.audience`);
      return new ExchangeTokenSource(route.prefix, route.exchange, deps);
    case 'none':
      return new NoTokenSource(!route.anonymous, deps.sessionTokens);
  }
}

interface UserCredential extends Credential {
  readonly session: LoadedSession;
}

/** `token: user`: the signed-in user's access token, refreshed when due or after a 401. */
class UserTokenSource implements TokenSource<UserCredential> {
  readonly needsSession = true;

  constructor(private readonly sessionTokens: SessionTokens) {}

  authorize(request: FastifyRequest, reply: FastifyReply): Awaitable<UserCredential> {
    return andThen(this.sessionTokens.current(request, reply), userCredential);
  }

  renew(request: FastifyRequest, reply: FastifyReply, rejected: UserCredential): Promise<UserCredential> | null {
    if (!this.sessionTokens.mayRefreshAfter401(rejected.session.record)) return null;
    return this.sessionTokens.refresh(request, reply, rejected.session, 'upstream_401').then(userCredential);
  }
}

/**
 * The credential of a session, one object per session record: the unseal cache and the
 * stores hand out the same record to every request of a session, so the ~1 KB
 * Authorization string is built once per token rather than once per request.
 */
const userCredentials = new WeakMap<LoadedSession['record'], UserCredential>();
function userCredential(session: LoadedSession): UserCredential {
  const cached = userCredentials.get(session.record);
  if (cached && cached.session.cookieValue === session.cookieValue) return cached;
  const credential = { authorization: authorizationOf(session.record), session };
  userCredentials.set(session.record, credential);
  return credential;
}

interface ApiCredential extends Credential {
  readonly session: LoadedSession;
  readonly token: ApiToken;
}

function apiCredential(session: LoadedSession, token: ApiToken): ApiCredential {
  return { authorization: authorizationOf(token), session, token };
}

/**
 * `token: user` with `resource` (RFC 8707): a token for that resource alone, obtained with
 * the session's refresh token (`resource=`) and kept in the session with its own expiry.
 * Its refreshes go through the session's one refresher: one refresh per refresh token,
 * whatever the resource.
 */
class ResourceTokenSource implements TokenSource<ApiCredential> {
  readonly needsSession = true;
  private readonly want: RefreshWant;

  constructor(
    private readonly resource: string,
    private readonly sessionTokens: SessionTokens,
  ) {
    this.want = { main: false, resources: [resource] };
  }

  authorize(request: FastifyRequest, reply: FastifyReply): Awaitable<ApiCredential> {
    return andThen(this.sessionTokens.currentFor(request, reply, this.want), (session) => this.credential(session));
  }

  renew(request: FastifyRequest, reply: FastifyReply, rejected: ApiCredential): Promise<ApiCredential> | null {
    if (!this.sessionTokens.mayRefreshAfter401(rejected.session.record, rejected.token.accessToken)) return null;
    const { accessToken, expiresAt } = rejected.token;
    return this.sessionTokens.refresh(request, reply, rejected.session, 'upstream_401', this.want, { accessToken, expiresAt }).then((session) => this.credential(session));
  }

  private credential(session: LoadedSession): ApiCredential {
    const token = session.record.resourceTokens?.[this.resource];
    // currentFor only answers with a usable token for this resource.
    if (!token) throw new Error(`no token for resource ${this.resource} after a refresh`);
    return apiCredential(session, token);
  }
}

/**
 * `token: exchange` (RFC 8693): the user's access token (refreshed when due) exchanged for
 * one with the route's audience and scope, cached in the session per audience.
 */
class ExchangeTokenSource implements TokenSource<ApiCredential> {
  readonly needsSession = true;
  /** Exchanged tokens an upstream rejected and that were exchanged again: at most once each. */
  private readonly renewed = new Set<string>();

  constructor(
    private readonly route: string,
    private readonly spec: NonNullable<RouteConfig['exchange']>,
    private readonly deps: TokenSourceDeps,
  ) {}

  authorize(request: FastifyRequest, reply: FastifyReply): Awaitable<ApiCredential> {
    return andThen(this.deps.sessionTokens.current(request, reply), (session) =>
      andThen(this.deps.exchangeTokens.tokenFor(request, reply, session, this.spec, this.route), credentialOf),
    );
  }

  renew(request: FastifyRequest, reply: FastifyReply, rejected: ApiCredential): Promise<ApiCredential> | null {
    const token = rejected.token.accessToken;
    if (this.renewed.has(token)) return null;
    if (this.renewed.size > 10_000) this.renewed.clear();
    this.renewed.add(token);
    return this.deps.exchangeTokens.renew(request, reply, rejected.session, this.spec, this.route, token).then(credentialOf);
  }
}

function credentialOf(exchanged: ExchangedToken): ApiCredential {
  return apiCredential(exchanged.session, exchanged.token);
}

interface ClientCredential extends Credential {
  readonly accessToken: string;
}

/** `token: client`: the application's own client-credentials token for the route's scopes. */
class ClientTokenSource implements TokenSource<ClientCredential> {
  readonly needsSession: boolean;

  constructor(
    private readonly route: RouteConfig,
    private readonly deps: TokenSourceDeps,
  ) {
    this.needsSession = !route.anonymous;
  }

  authorize(request: FastifyRequest, reply: FastifyReply): Awaitable<ClientCredential> {
    const session = this.needsSession ? this.deps.sessionTokens.present(request, reply) : undefined;
    return andThen(session, () => this.clientCredential(request));
  }

  renew(request: FastifyRequest, _reply: FastifyReply, rejected: ClientCredential): Promise<ClientCredential> | null {
    if (!this.deps.clientTokens.replaceRejected(this.route.clientScopes, rejected.accessToken)) return null;
    return this.clientCredential(request);
  }

  private async clientCredential(request: FastifyRequest): Promise<ClientCredential> {
    try {
      const tokens = await this.deps.clientTokens.get(this.route.clientScopes);
      return { authorization: authorizationOf(tokens), accessToken: tokens.accessToken };
    } catch (err) {
      if (!(err instanceof ProviderError)) throw err;
      throw answerProviderFailure(err, 'client token', request.log, this.deps.retryAfterSeconds, { route: this.route.prefix });
    }
  }
}

/** What a DPoP credential is made from: the token, and whose key it is bound to. */
interface Bound extends Credential {
  readonly session?: LoadedSession;
  readonly token?: ApiToken;
  readonly accessToken?: string;
}

/** A credential sent as `Authorization: DPoP <token>` with a proof signed by the key the token is bound to. */
class DpopCredential implements Credential {
  readonly authorization: string;
  /** The session, for streams that end with it (api-routes.ts). */
  readonly session: LoadedSession | undefined;
  /** base64url(SHA-256(token)): once per token, not per request. */
  private readonly ath: string;

  constructor(
    readonly inner: Credential,
    accessToken: string,
    private readonly key: DpopKey,
  ) {
    this.authorization = `DPoP ${accessToken}`;
    this.session = (inner as Bound).session;
    this.ath = accessTokenHash(accessToken);
  }

  proof(htm: string, htu: string, nonce: string | undefined): string {
    return this.key.proof(htm, htu, this.ath, nonce);
  }
}

/**
 * `dpop: true` routes: the route's own source (user, resource, exchange, client) with
 * every credential sent as DPoP. The key is the one the token was obtained with: the
 * session's own (or the configured key) for session tokens, the process (or configured)
 * key for the client-credentials token. Renewals after a 401 are the inner source's.
 */
class DpopTokenSource implements TokenSource<DpopCredential> {
  readonly needsSession: boolean;
  /** One DPoP credential per inner credential: the inner ones are cached per token, so is this. */
  private readonly credentials = new WeakMap<Credential, DpopCredential>();

  constructor(
    private readonly inner: TokenSource,
    private readonly keys: DpopKeys,
  ) {
    this.needsSession = inner.needsSession;
  }

  authorize(request: FastifyRequest, reply: FastifyReply): Awaitable<DpopCredential | undefined> {
    return andThen(this.inner.authorize(request, reply), (credential) => (credential ? this.wrap(credential) : undefined));
  }

  renew(request: FastifyRequest, reply: FastifyReply, rejected: DpopCredential): Promise<DpopCredential> | null {
    const renewal = this.inner.renew(request, reply, rejected.inner);
    return renewal && renewal.then((credential) => this.wrap(credential));
  }

  private wrap(credential: Credential): DpopCredential {
    let wrapped = this.credentials.get(credential);
    if (wrapped) return wrapped;
    const bound = credential as Bound;
    const accessToken = bound.token?.accessToken ?? bound.accessToken ?? bound.session?.record.accessToken;
    if (accessToken === undefined) throw new Error('a DPoP route credential without an access token');
    // Session tokens are bound to the session's key; the client token to the process key.
    const key = bound.session ? this.keys.forSession(bound.session.record) : this.keys.processKey;
    if (!key) {
      // A session from before oidc.dpop was turned on: its tokens are bound to no key.
      throw loginRequired('This API needs a sign-in made with DPoP: sign in again.');
    }
    wrapped = new DpopCredential(credential, accessToken, key);
    this.credentials.set(credential, wrapped);
    return wrapped;
  }
}

/** `token: none`: a plain proxy, behind a session unless the route is anonymous. */
class NoTokenSource implements TokenSource {
  constructor(
    readonly needsSession: boolean,
    private readonly sessionTokens: SessionTokens,
  ) {}

  authorize(request: FastifyRequest, reply: FastifyReply): Awaitable<undefined> {
    if (!this.needsSession) return undefined;
    return andThen(this.sessionTokens.present(request, reply), () => undefined);
  }

  renew(): null {
    return null;
  }
}

/**
 * Authorization values by the object holding the token (a client token set): built once
 * per token rather than once per request.
 */
const authorizations = new WeakMap<object, string>();

/**
 * The Authorization header value for a token (the provider's token_type, usually Bearer).
 * A DPoP-bound token on a route without `dpop: true` goes as Bearer: `DPoP` without a
 * proof is refused everywhere, while an API that does not verify DPoP takes it as Bearer.
 */
function authorizationOf(token: { tokenType: string; accessToken: string }): string {
  let value = authorizations.get(token);
  if (value === undefined) {
    value = `${token.tokenType === 'DPoP' ? 'Bearer' : token.tokenType} ${token.accessToken}`;
    authorizations.set(token, value);
  }
  return value;
}
