/**
 * The demo's embedded OpenID provider: `oidc-provider` (a devDependency) on 127.0.0.1,
 * imported only here and only when the demo runs, so a production install without dev
 * dependencies never needs it.
 *
 * Any user name and password sign in (devInteractions), access tokens are short so
 * refreshes are visible, refresh tokens are always issued and rotate on every use.
 */
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeServer, listenLoopback, loopbackUrl } from './net.js';
import { interactionPage, logoutPage, providerErrorPage, signedOutPage, type InteractionView } from './provider-pages.js';

/** Raised when the demo cannot run here (oidc-provider is not installed). */
export class DemoUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DemoUnavailableError';
  }
}

export interface DemoProviderOptions {
  port: number;
  accessTokenSeconds: number;
  /** The token-handler client. */
  bff: { clientId: string; clientSecret: string; redirectUri: string; postLogoutRedirectUri: string };
  /** The demo API, which introspects tokens. */
  api: { clientId: string; clientSecret: string };
}

/** One call to the token endpoint, as the provider answered it. */
export interface TokenGrantRecord {
  grantType: string;
  status: number;
  /** Epoch milliseconds when the request arrived. */
  at: number;
}

export interface DemoProvider {
  issuer: string;
  introspectionEndpoint: string;
  /** Every access, refresh and ID token the token endpoint handed out (the most recent 5000). */
  issuedTokens(): string[];
  tokenRequests(): TokenGrantRecord[];
  close(): Promise<void>;
}

/**
 * The acr the demo's step-up route (/api/secure) asks for. The demo provider signs a user in
 * with it when a login asks for it (acr_values), after showing its sign-in form again.
 */
export const DEMO_STRONG_ACR = 'urn:token-handler:demo:strong';

type InteractionResult = Record<string, Record<string, unknown> | undefined>;

/** The few parts of oidc-provider this file touches; the package ships no types. */
interface OidcProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  interactionFinished(req: IncomingMessage, res: ServerResponse, result: InteractionResult, options?: unknown): Promise<void>;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<Pick<InteractionView, 'prompt' | 'params'>>;
  use(middleware: (ctx: KoaContext, next: () => Promise<void>) => Promise<void>): void;
  urlFor(name: string): string;
}
interface KoaContext {
  req: IncomingMessage;
  res: ServerResponse;
  set(name: string, value: string): void;
  method: string;
  path: string;
  status: number;
  body: unknown;
  host: string;
  type: string;
  oidc?: { params?: Record<string, unknown>; session?: { accountId?: string }; acr?: string; result?: InteractionResult };
}
type OidcProviderConstructor = new (issuer: string, configuration: Record<string, unknown>) => OidcProviderInstance;
interface OidcProviderModule {
  default: OidcProviderConstructor;
  errors: Record<string, new (description: string) => Error>;
  interactionPolicy: {
    base(): { get(name: string): { checks: { add(check: unknown): void } } };
    Check: new (reason: string, description: string, error: string, check: (ctx: KoaContext) => boolean) => unknown;
  };
}

const KEEP_TOKENS = 5000;
const CLIENT_NAME = 'token-handler demo';

let loading: Promise<OidcProviderModule> | undefined;

/** Imports oidc-provider once; a clear error when it is not installed. */
export function loadOidcProvider(): Promise<OidcProviderModule> {
  quietNotices();
  // A computed specifier: the type checker and bundlers leave the devDependency alone.
  const specifier: string = 'oidc-provider';
  loading ??= (import(specifier) as Promise<OidcProviderModule>).catch((err: unknown) => {
    loading = undefined;
    const code = (err as { code?: unknown }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new DemoUnavailableError(
        'the demo needs the development dependencies (oidc-provider), which are not installed here ' +
          '(an install with --omit=dev, such as the production image). Run `npm install` in a checkout of ' +
          'token-handler and then `npm start`.',
      );
    }
    throw err;
  });
  return loading;
}

/**
 * oidc-provider prints development notices through console.info/warn ("oidc-provider
 * NOTICE: ..." / "WARNING: ..."): in the demo they are expected (in-memory adapter,
 * devInteractions, Node 20). Drop exactly those; OIDC_PROVIDER_NOTICES=1 shows them.
 */
function quietNotices(): void {
  if (process.env.OIDC_PROVIDER_NOTICES) return;
  const mark = Symbol.for('token-handler.demo.quietOidcProvider');
  const target = console as unknown as Record<PropertyKey, unknown>;
  if (target[mark]) return;
  target[mark] = true;
  const notice = /^(?:\u001b\[[0-9;]*m)?oidc-provider (?:NOTICE|WARNING): /;
  for (const method of ['info', 'warn'] as const) {
    const original = console[method].bind(console);
    console[method] = (...args: unknown[]) => {
      if (typeof args[0] === 'string' && notice.test(args[0])) return;
      original(...args);
    };
  }
}

export async function startDemoProvider(options: DemoProviderOptions): Promise<DemoProvider> {
  const { default: Provider, errors, interactionPolicy } = await loadOidcProvider();

  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server: Server = createServer((req, res) => {
    if (handler) return handler(req, res);
    res.writeHead(503).end();
  });
  // Listen first: the issuer carries the port.
  const port = await listenLoopback(server, options.port);
  const issuer = loopbackUrl(port);
  // Where the provider's pages lead back to: the demo page.
  const demoUrl = new URL('/', options.bff.redirectUri).href;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `demo-${randomUUID()}`, use: 'sig', alg: 'RS256' };

  // Step-up: a login asking for the strong acr shows the sign-in form again, whatever session the provider has.
  const asksStrongAcr = (acrValues: unknown) => typeof acrValues === 'string' && acrValues.split(' ').includes(DEMO_STRONG_ACR);
  const policy = interactionPolicy.base();
  policy.get('login').checks.add(
    new interactionPolicy.Check('strong_acr', 'a stronger sign-in was asked for', 'login_required', (ctx) =>
      asksStrongAcr(ctx.oidc?.params?.acr_values) && ctx.oidc?.session?.accountId !== undefined && ctx.oidc.acr !== DEMO_STRONG_ACR && !ctx.oidc.result?.login,
    ),
  );

  const provider = new Provider(issuer, {
    acrValues: [DEMO_STRONG_ACR],
    interactions: { policy },
    clients: [
      {
        client_id: options.bff.clientId,
        client_secret: options.bff.clientSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: [options.bff.redirectUri],
        post_logout_redirect_uris: [options.bff.postLogoutRedirectUri],
        client_name: CLIENT_NAME,
      },
      {
        // Only authenticates to introspect tokens.
        client_id: options.api.clientId,
        client_secret: options.api.clientSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks: { keys: [signingKey] },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    claims: {
      acr: null,
      auth_time: null,
      // groups: the demo's admin-only route (/api/admin) lets users whose name starts with "admin" in.
      openid: ['sub', 'groups'],
      profile: ['name'],
      email: ['email', 'email_verified'],
    },
    // Name and e-mail in the ID token too, so /auth/user can show them.
    conformIdTokenClaims: false,
    async findAccount(_ctx: unknown, sub: string) {
      return {
        accountId: sub,
        async claims() {
          return { sub, name: displayName(sub), email: `${sub}@example.test`, email_verified: true, groups: sub.startsWith('admin') ? ['admin'] : ['users'] };
        },
      };
    },
    features: {
      devInteractions: { enabled: true },
      introspection: {
        enabled: true,
        async allowedPolicy(ctx: { oidc: { client: { clientId: string } } }, client: { clientAuthMethod: string }, token: { clientId: string }) {
          return !(client.clientAuthMethod === 'none' && token.clientId !== ctx.oidc.client.clientId);
        },
      },
      revocation: {
        enabled: true,
        async allowedPolicy(_ctx: unknown, client: { clientId: string; clientAuthMethod: string }, token: { clientId: string }) {
          if (token.clientId === client.clientId) return true;
          if (client.clientAuthMethod === 'none') return false;
          throw new (errors.InvalidRequest ?? Error)('client is not authorized to revoke the presented token');
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx: KoaContext, form: string) {
          ctx.type = 'html';
          ctx.body = logoutPage(ctx.host, form);
        },
        async postLogoutSuccessSource(ctx: KoaContext) {
          ctx.type = 'html';
          ctx.body = signedOutPage(demoUrl);
        },
      },
    },
    pkce: { required: () => true },
    // A refresh token for every client allowed the grant, without asking for offline_access consent.
    async issueRefreshToken(_ctx: unknown, client: { grantTypeAllowed(grant: string): boolean }) {
      return client.grantTypeAllowed('refresh_token');
    },
    rotateRefreshToken: true,
    ttl: {
      AccessToken: options.accessTokenSeconds,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    clientBasedCORS: () => false,
    async renderError(ctx: KoaContext, out: Record<string, string>) {
      ctx.type = 'html';
      ctx.body = providerErrorPage(out, demoUrl);
    },
  });

  // The sign-in and consent pages are the demo's own; devInteractions still takes the forms they post.
  provider.use(async (ctx, next) => {
    const uid = ctx.method === 'GET' ? /^\/interaction\/([^/]+)$/.exec(ctx.path)?.[1] : undefined;
    if (uid === undefined) return next();
    const { prompt, params } = await provider.interactionDetails(ctx.req, ctx.res);
    const body = interactionPage({ uid, prompt, params, clientName: CLIENT_NAME });
    if (body === undefined) return next();
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';
    ctx.body = body;
  });
  // devInteractions sign in without an acr: the strong one when the login asked for it.
  const interactionFinished = provider.interactionFinished.bind(provider);
  provider.interactionFinished = async (req, res, result, finishOptions) => {
    const login = result.login;
    if (login && login.acr === undefined && asksStrongAcr((await provider.interactionDetails(req, res)).params.acr_values)) login.acr = DEMO_STRONG_ACR;
    return interactionFinished(req, res, result, finishOptions);
  };

  // Record every token-endpoint answer (grant type, status; tokens for the leak tests).
  const issued: string[] = [];
  const requests: TokenGrantRecord[] = [];
  const tokenPath = new URL(provider.urlFor('token')).pathname;
  provider.use(async (ctx, next) => {
    const at = Date.now();
    await next();
    if (ctx.method !== 'POST' || ctx.path !== tokenPath) return;
    const grantType = ctx.oidc?.params?.grant_type;
    requests.push({ grantType: typeof grantType === 'string' ? grantType : 'unknown', status: ctx.status, at });
    if (requests.length > KEEP_TOKENS) requests.splice(0, requests.length - KEEP_TOKENS);
    const body = ctx.body as Record<string, unknown> | undefined;
    if (ctx.status !== 200 || !body || typeof body !== 'object') return;
    for (const name of ['access_token', 'refresh_token', 'id_token']) {
      if (typeof body[name] === 'string') issued.push(body[name]);
    }
    if (issued.length > KEEP_TOKENS) issued.splice(0, issued.length - KEEP_TOKENS);
  });

  handler = provider.callback();
  return {
    issuer,
    introspectionEndpoint: provider.urlFor('introspection'),
    issuedTokens: () => [...issued],
    tokenRequests: () => [...requests],
    close: () => closeServer(server),
  };
}

function displayName(sub: string): string {
  return sub
    .split(/[\s._-]+/)
    .filter(Boolean)
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join(' ') || sub;
}
