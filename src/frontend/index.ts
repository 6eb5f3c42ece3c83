/**
 * The frontend route (`routes: [{ prefix: /, static: ./dist }]`, or a dev server as its
 * upstream): the SPA on token-handler's own origin, as the catch-all below /auth, the
 * operational endpoints and the API routes, none of which it ever answers for.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RouteConfig } from '../config/types.js';
import { BrowserError } from '../errors.js';
import { isPageLoad } from '../pages/page-load.js';
import type { RequestHeaderPolicy } from '../proxy/headers.js';
import { devServerProxy } from './dev-server.js';
import { notTheFrontends } from './routes.js';
import { addSecurityHeaders, DEFAULT_CONTENT_SECURITY_POLICY } from './security-headers.js';
import { serveIndex, staticFiles } from './static-files.js';

export { apiRoutesOf, frontendRouteOf } from './routes.js';

export interface FrontendOptions {
  route: RouteConfig;
  /** The API routes' prefixes: their paths are never the frontend's. */
  apiPrefixes: readonly string[];
  policy: RequestHeaderPolicy;
  publicProto: string;
  publicHost: string;
  /** '' or the app's path prefix: the paths the route sees start with it. */
  pathPrefix?: string;
  /** Path prefixes of other apps on the same host below this one's: never this SPA's pages. */
  otherAppPrefixes?: readonly string[];
}

export interface Frontend {
  /** Registers the route (an encapsulated plugin). */
  register(app: FastifyInstance): Promise<void>;
  /** For the app's not-found handler: index.html for a page load of a client-side route, undefined otherwise. */
  pageFallback(request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined;
}

export function createFrontend(options: FrontendOptions): Frontend {
  const { route } = options;
  const isStatic = route.static !== undefined;
  const pathPrefix = options.pathPrefix ?? '';
  const notOursBelowPrefix = notTheFrontends(options.apiPrefixes);
  const others = options.otherAppPrefixes ?? [];
  const notOurs =
    pathPrefix === '' && others.length === 0
      ? notOursBelowPrefix
      : (path: string) =>
          others.some((prefix) => path === prefix || path.startsWith(`${prefix}/`)) || notOursBelowPrefix(path.startsWith(pathPrefix) ? path.slice(pathPrefix.length) || '/' : path);
  // Dev servers inline scripts (hot reload, React refresh): a policy only when one is configured.
  const contentSecurityPolicy = route.contentSecurityPolicy ?? (isStatic ? DEFAULT_CONTENT_SECURITY_POLICY : '');

  const plugin = async (scope: FastifyInstance) => {
    scope.addHook('onRequest', async (request) => {
      if (notOurs(request.url.split('?', 1)[0]!)) throw new BrowserError('not_found', 'No route here.');
    });
    scope.addHook('onSend', async (_request, reply) => addSecurityHeaders(reply, contentSecurityPolicy));
    if (route.static !== undefined) await staticFiles(scope, route.static);
    else await devServerProxy(scope, { route: { ...route, upstream: route.upstream! }, policy: options.policy, publicProto: options.publicProto, publicHost: options.publicHost });
  };

  return {
    async register(app) {
      await app.register(plugin);
    },
    pageFallback: (request, reply) => (isStatic && isPageLoad(request) ? serveIndex(request, reply) : undefined),
  };
}
