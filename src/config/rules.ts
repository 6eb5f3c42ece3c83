/**
 * Rules that span several keys, which JSON Schema cannot express: defaults derived from
 * another key, and combinations of valid values that do not work together. They see the
 * configuration with every reported key removed, so they never pile on a problem already
 * reported.
 */
import { FRONTEND_PREFIX, parseUrl } from './checks.js';
import { HTTP_URL } from './schema.js';
import { getAt, isRecord, setAt, type KeyPath } from './paths.js';
import { quote, type ProblemList } from './problems.js';
import type { Config } from './types.js';

/** The configuration as far as it has been validated; invalid values are left out. */
type DeepPartial<T> = T extends readonly (infer I)[]
  ? Array<DeepPartial<I>>
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;
export type Draft = DeepPartial<Config>;

/**
 * Fills the defaults that depend on another key (before validation, from the values as
 * given) and returns their keys: when one cannot be derived, the key it derives from has
 * the problem, so the derived key is not reported missing as well.
 */
export function applyDerivedDefaults(data: Record<string, unknown>): KeyPath[] {
  const derived: Array<{ path: KeyPath; value: () => unknown }> = [
    {
      path: ['oidc', 'postLogoutRedirectUri'],
      value: () => {
        const publicUrl = getAt(data, ['publicUrl']);
        const url = typeof publicUrl === 'string' ? parseUrl(publicUrl) : undefined;
        return url && ['http:', 'https:'].includes(url.protocol) ? `${url.origin}/` : undefined;
      },
    },
    // Never the main listener's own port by default.
    { path: ['metrics', 'port'], value: () => (getAt(data, ['listen', 'port']) === 9090 ? 9091 : 9090) },
  ];
  for (const { path, value } of derived) {
    const section = getAt(data, path.slice(0, -1));
    if (section !== undefined && !isRecord(section)) continue;
    const fallback = getAt(data, path) === undefined ? value() : undefined;
    if (fallback !== undefined) setAt(data, path, fallback);
  }
  return derived.map(({ path }) => path);
}

/** Where a rule reports: the whole configuration's problems, or one app's (paths under apps[i]). */
export type CrossKeyProblems = Pick<ProblemList, 'addCrossKey' | 'hasFailed'>;
type CrossRule = (draft: Draft, problems: CrossKeyProblems) => void;

/** Absent from the input, as opposed to present but already reported as invalid. */
function absent(problems: CrossKeyProblems, path: KeyPath, value: unknown): boolean {
  return value === undefined && !problems.hasFailed(path);
}

const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];
/** The ways to reach Redis; exactly one is given. */
const REDIS_TOPOLOGIES = ['url', 'sentinel', 'cluster'] as const;

const crossRules: CrossRule[] = [
  function insecureIssuer(draft, problems) {
    const oidc = draft.oidc;
    const url = oidc?.issuer === undefined ? undefined : parseUrl(oidc.issuer);
    if (!oidc || url?.protocol !== 'http:') return;
    // A local provider in development and tests is the one case plain http is normal.
    if (LOOPBACK_HOSTS.includes(url.hostname)) {
      oidc.allowInsecureIssuer = true;
    } else if (oidc.allowInsecureIssuer === false) {
      problems.addCrossKey(['oidc', 'issuer'], `is ${quote(oidc.issuer ?? '')}, plain http; expected https (http only on localhost or with oidc.allowInsecureIssuer: true)`);
    }
  },

  function clientCredentials(draft, problems) {
    const oidc = draft.oidc;
    if (!oidc) return;
    switch (oidc.clientAuth) {
      case 'client_secret_basic':
      case 'client_secret_post':
        if (absent(problems, ['oidc', 'clientSecret'], oidc.clientSecret)) {
          problems.addCrossKey(['oidc', 'clientSecret'], `is missing; required when oidc.clientAuth is ${oidc.clientAuth}`);
        }
        break;
      case 'private_key_jwt':
        if (absent(problems, ['oidc', 'privateKeyJwk'], oidc.privateKeyJwk)) {
          problems.addCrossKey(['oidc', 'privateKeyJwk'], 'is missing; required when oidc.clientAuth is private_key_jwt (a private JWK with "kty" and "d")');
        }
        break;
      case 'none':
        if (oidc.clientSecret !== undefined) {
          problems.addCrossKey(['oidc', 'clientSecret'], 'is set; a public client (oidc.clientAuth: none) must not have one — remove it or choose client_secret_basic');
        }
        break;
    }
  },

  function sessionTimeouts(draft, problems) {
    const { idleTimeoutSeconds: idle, absoluteTimeoutSeconds: absolute } = draft.session ?? {};
    if (idle !== undefined && absolute !== undefined && absolute < idle) {
      problems.addCrossKey(['session', 'absoluteTimeoutSeconds'], `is ${absolute}; expected at least session.idleTimeoutSeconds (${idle})`);
    }
  },

  function redisStore(draft, problems) {
    const session = draft.session;
    const url: KeyPath = ['session', 'redis', 'url'];
    if (session?.store === 'redis' && session.redis === undefined && !problems.hasFailed(['session', 'redis'])) {
      problems.addCrossKey(url, 'is missing; required when session.store is redis (e.g. redis://127.0.0.1:6379), or session.redis.sentinel or session.redis.cluster');
    }
  },

  function redisTopology(draft, problems) {
    const redis = draft.session?.redis;
    const path = (key: string): KeyPath => ['session', 'redis', key];
    if (!redis) return;
    const given = REDIS_TOPOLOGIES.filter((key) => redis[key] !== undefined || problems.hasFailed(path(key)));
    if (given.length === 0) {
      problems.addCrossKey(path('url'), 'is missing; session.redis needs one of url (one server), sentinel or cluster (e.g. url: redis://127.0.0.1:6379)');
    } else if (given.length > 1) {
      problems.addCrossKey(path(given[1]!), `is set as well as session.redis.${given[0]}; expected only one of url, sentinel or cluster`);
    }
    // A redis:// URL says "no TLS": a tls block beside it would be silently half-applied.
    const scheme = redis.url === undefined ? undefined : parseUrl(redis.url)?.protocol;
    if (redis.tls !== undefined && scheme === 'redis:') {
      problems.addCrossKey(path('tls'), 'is set but session.redis.url is redis:// (plain); expected a rediss:// URL for TLS, or no tls block');
    }
  },

  function distinctPrefixes(draft, problems) {
    const seen = new Map<string, number>();
    (draft.routes ?? []).forEach((route, index) => {
      if (route.prefix === undefined) return;
      const first = seen.get(route.prefix);
      if (first === undefined) {
        seen.set(route.prefix, index);
      } else {
        problems.addCrossKey(['routes', index, 'prefix'], `is ${quote(route.prefix)}, the same as routes[${first}].prefix; each route needs its own prefix`);
      }
    });
  },

  function anonymousRoutes(draft, problems) {
    (draft.routes ?? []).forEach((route, index) => {
      if (route.anonymous === true && route.token === 'user') {
        problems.addCrossKey(
          ['routes', index, 'anonymous'],
          'is true but token is user; only token: client and token: none routes can let callers without a session through',
        );
      }
    });
  },

  function frontendRoute(draft, problems) {
    (draft.routes ?? []).forEach((route, index) => {
      const at = (key: string): KeyPath => ['routes', index, key];
      if (route.prefix !== FRONTEND_PREFIX) {
        if (absent(problems, at('upstream'), route.upstream)) problems.addCrossKey(at('upstream'), `is missing; expected ${HTTP_URL}`);
        if (route.static !== undefined) problems.addCrossKey(at('static'), `is set on an API route; only the frontend route (prefix /) serves a directory`);
        if (route.contentSecurityPolicy !== undefined) {
          problems.addCrossKey(at('contentSecurityPolicy'), 'is set on an API route; only the frontend route (prefix /) serves pages');
        }
        return;
      }
      if (route.upstream !== undefined && route.static !== undefined) {
        problems.addCrossKey(at('static'), 'is set together with upstream; the frontend route serves either a directory (static) or a dev server (upstream)');
      } else if (absent(problems, at('upstream'), route.upstream) && absent(problems, at('static'), route.static)) {
        problems.addCrossKey(at('static'), "is missing; the frontend route (prefix /) needs static (the SPA's build directory) or upstream (its dev server)");
      }
      if (route.upstream !== undefined && (route.token !== 'none' || route.anonymous !== true)) {
        problems.addCrossKey(
          at('token'),
          `is ${route.token ?? 'user'}${route.anonymous === true ? '' : ' without anonymous: true'}; the frontend route's dev server serves every visitor's pages without a token: set token: none and anonymous: true`,
        );
      }
      if (route.static !== undefined && route.websocket === true) {
        problems.addCrossKey(at('websocket'), "is true on a static frontend route; it passes a dev server's hot reload through (upstream)");
      }
    });
  },

  function perApiTokens(draft, problems) {
    (draft.routes ?? []).forEach((route, index) => {
      const token = route.token ?? 'user';
      if (route.resource !== undefined && token !== 'user') {
        problems.addCrossKey(['routes', index, 'resource'], `is set but token is ${token}; a resource indicator applies to token: user routes only`);
      }
      if (route.resource !== undefined) {
        const url = parseUrl(route.resource);
        if (!url || url.hash) problems.addCrossKey(['routes', index, 'resource'], `is ${quote(route.resource)}; expected an absolute URI without a fragment (RFC 8707), such as https://orders.example`);
      }
      if (route.exchange !== undefined && token !== 'exchange') {
        problems.addCrossKey(['routes', index, 'exchange'], `is set but token is ${token}; expected token: exchange with it`);
      }
      if (token === 'exchange' && route.exchange === undefined) {
        problems.addCrossKey(['routes', index, 'exchange'], 'is missing; token: exchange needs exchange.audience (and optionally scope)');
      }
      if (token === 'exchange' && draft.oidc?.clientAuth === 'none') {
        problems.addCrossKey(['routes', index, 'token'], 'is "exchange" but oidc.clientAuth is none; token exchange needs a confidential client');
      }
    });
  },

  function routePolicies(draft, problems) {
    (draft.routes ?? []).forEach((route, index) => {
      if (route.anonymous !== true) return;
      for (const key of ['require', 'identityHeaders'] as const) {
        const value = route[key];
        if (value !== undefined && Object.keys(value).length > 0) {
          problems.addCrossKey(['routes', index, key], 'is set but the route is anonymous: a route policy and identity headers need a session (remove anonymous: true)');
        }
      }
    });
  },

  function upstreamBasePath(draft, problems) {
    (draft.routes ?? []).forEach((route, index) => {
      const url = route.upstream === undefined ? undefined : parseUrl(route.upstream);
      if (!url) return;
      if (url.search || url.hash) {
        problems.addCrossKey(['routes', index, 'upstream'], 'has a query or fragment; expected a base URL such as http://api:8080 or http://api:8080/base');
        return;
      }
      // The upstream's path is a base that rewritePrefix is appended to. One that repeats it
      // most likely meant the path once (earlier versions took rewritePrefix alone): say so.
      const base = url.pathname.replace(/\/+$/, '');
      const rewrite = route.rewritePrefix;
      if (base !== '' && rewrite !== undefined && (rewrite === base || rewrite.startsWith(`${base}/`))) {
        problems.addCrossKey(
          ['routes', index, 'rewritePrefix'],
          `is ${quote(rewrite)}, which repeats the upstream's path ${quote(base)}: it is appended to that path (${route.prefix ?? '/prefix'}/x would go to ${base}${rewrite}/x); expected "" or only what comes after ${quote(base)}`,
        );
      }
    });
  },

  function serverTimeouts(draft, problems) {
    const { requestTimeoutMs: request, headersTimeoutMs: headers } = draft.limits ?? {};
    if (request !== undefined && headers !== undefined && headers > request) {
      problems.addCrossKey(['limits', 'headersTimeoutMs'], `is ${headers}; expected at most limits.requestTimeoutMs (${request})`);
    }
  },

  function metricsPort(draft, problems) {
    const { enabled, port, onMainListener } = draft.metrics ?? {};
    if (enabled && !onMainListener && port !== undefined && port !== 0 && port === draft.listen?.port) {
      problems.addCrossKey(
        ['metrics', 'port'],
        `is ${port}, the same as listen.port; expected another port, or metrics.onMainListener: true to serve /metrics on the main listener`,
      );
    }
  },

  function dpop(draft, problems) {
    const oidcDpop = draft.oidc?.dpop === true;
    if (draft.oidc?.dpopKeyFile !== undefined && !oidcDpop && !problems.hasFailed(['oidc', 'dpop'])) {
      problems.addCrossKey(['oidc', 'dpopKeyFile'], 'is set but oidc.dpop is false; set oidc.dpop: true to bind tokens with this key, or remove dpopKeyFile');
    }
    (draft.routes ?? []).forEach((route, index) => {
      if (route.dpop !== true) return;
      const at = (key: string): KeyPath => ['routes', index, key];
      if (!oidcDpop && !problems.hasFailed(['oidc', 'dpop'])) {
        problems.addCrossKey(at('dpop'), 'is true but oidc.dpop is false; DPoP toward an upstream needs DPoP-bound tokens: set oidc.dpop: true');
      }
      if ((route.token ?? 'user') === 'none') {
        problems.addCrossKey(at('dpop'), 'is true but token is none; a DPoP proof goes with a token: set token (user, client or exchange), or dpop: false');
      }
      if (route.websocket === true) {
        problems.addCrossKey(
          at('websocket'),
          'is true on a dpop: true route; WebSocket upgrades are not sent with DPoP proofs: serve the socket from a route of its own (dpop: false) or drop websocket',
        );
      }
    });
  },

  function clientTokenRoutes(draft, problems) {
    if (draft.oidc?.clientAuth !== 'none') return;
    (draft.routes ?? []).forEach((route, index) => {
      if (route.token === 'client') {
        problems.addCrossKey(
          ['routes', index, 'token'],
          'is "client" but oidc.clientAuth is none; client-credentials tokens need a confidential client (client_secret_basic, client_secret_post or private_key_jwt)',
        );
      }
    });
  },
];

/** Rules about what is one per process (Redis, the listener, metrics), not per app. */
const PROCESS_RULES = new Set(['redisTopology', 'serverTimeouts', 'metricsPort']);

/**
 * Applies the rules across keys to `draft` (which a rule may complete, e.g.
 * allowInsecureIssuer): every rule (the single-app form), the process-wide ones (the top
 * level of `apps:`), or the per-app ones (one app's effective configuration).
 */
export function checkAcrossKeys(draft: Draft, problems: CrossKeyProblems, which: 'all' | 'process' | 'app' = 'all'): void {
  for (const rule of crossRules) {
    if (which === 'all' || (which === 'process') === PROCESS_RULES.has(rule.name)) rule(draft, problems);
  }
}
