/**
 * Which app a request is for, with several apps (`apps:`): by its Host (without the port,
 * compared lower-case) and, for apps below a path prefix, the longest prefix of its path.
 * The router does it for every request that has a route (`appHostStrategy`, a constraint on
 * every route of an app: one Map lookup); `AppMatcher` does it for the rest (404s).
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyRequest } from 'fastify';

/** The name of the router constraint every route of an app carries. */
export const APP_HOST_CONSTRAINT = 'tokenHandlerHost';

/** `Shop.Example.com:8443` → `shop.example.com`; `[::1]:80` → `[::1]`. */
export function hostOfHeader(value: string | undefined): string | undefined {
  if (value === undefined || value === '') return undefined;
  let end = value.length;
  if (value.charCodeAt(0) === 91 /* [ */) {
    const close = value.indexOf(']');
    if (close !== -1) end = close + 1;
  } else {
    const colon = value.indexOf(':');
    if (colon !== -1) end = colon;
  }
  return value.slice(0, end).toLowerCase();
}

function hostOfRequest(request: IncomingMessage): string | undefined {
  const host = request.headers.host ?? (request.headers[':authority'] as string | undefined);
  return hostOfHeader(host);
}

/**
 * find-my-way's constraint strategy: a route with `{ tokenHandlerHost: 'shop.example.com' }`
 * matches requests whose Host is that host on any port. Routes without the constraint (health,
 * metrics) match every host.
 */
export const appHostStrategy: Parameters<FastifyInstance['addConstraintStrategy']>[0] = {
  name: APP_HOST_CONSTRAINT,
  storage() {
    type Store = Parameters<ReturnType<Parameters<FastifyInstance['addConstraintStrategy']>[0]['storage']>['set']>[1];
    const hosts = new Map<string, Store>();
    return {
      get: (host: string) => hosts.get(host) ?? null,
      set: (host: string, store: Store) => {
        hosts.set(host, store);
      },
    };
  },
  deriveConstraint: (request: IncomingMessage) => hostOfRequest(request),
  mustMatchWhenDerived: false,
  validate(value: unknown) {
    if (typeof value !== 'string') throw new TypeError('tokenHandlerHost: expected a host name');
  },
};

interface Matchable {
  host: string | undefined;
  pathPrefix: string;
}

/** The app of a request by Host and longest path prefix, for requests no route took. */
export class AppMatcher<T extends Matchable> {
  /** host → its apps, longest path prefix first. */
  private readonly byHost = new Map<string, T[]>();

  constructor(apps: readonly T[]) {
    for (const app of apps) {
      if (app.host === undefined) continue;
      const list = this.byHost.get(app.host) ?? [];
      list.push(app);
      list.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length);
      this.byHost.set(app.host, list);
    }
  }

  find(request: FastifyRequest): T | undefined {
    const host = hostOfRequest(request.raw);
    const apps = host === undefined ? undefined : this.byHost.get(host);
    if (!apps) return undefined;
    const path = request.url.split('?', 1)[0]!;
    return apps.find((app) => app.pathPrefix === '' || path === app.pathPrefix || path.startsWith(`${app.pathPrefix}/`));
  }

  /** Path prefixes of the other apps on `host` that lie below `pathPrefix` (a frontend there must not answer for them). */
  prefixesBelow(host: string | undefined, pathPrefix: string): string[] {
    if (host === undefined) return [];
    return (this.byHost.get(host) ?? []).filter((app) => app.pathPrefix.length > pathPrefix.length && app.pathPrefix.startsWith(pathPrefix)).map((app) => app.pathPrefix);
  }
}
