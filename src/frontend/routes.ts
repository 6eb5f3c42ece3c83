import { FRONTEND_PREFIX, RESERVED_PREFIXES } from '../config/checks.js';
import type { ApiRouteConfig, RouteConfig } from '../config/types.js';

/** The frontend route (prefix /), if configured. */
export function frontendRouteOf(routes: readonly RouteConfig[]): RouteConfig | undefined {
  return routes.find((route) => route.prefix === FRONTEND_PREFIX);
}

/** Every route but the frontend one: each has an upstream (config rules). */
export function apiRoutesOf(routes: readonly RouteConfig[]): ApiRouteConfig[] {
  return routes.filter((route): route is ApiRouteConfig => route.prefix !== FRONTEND_PREFIX && route.upstream !== undefined);
}

/**
 * Whether a path belongs to token-handler itself or to an API route, which the frontend
 * route never answers for: a missing API path is a JSON 404, never the SPA's index.html.
 */
export function notTheFrontends(apiPrefixes: readonly string[]): (path: string) => boolean {
  const prefixes = [...RESERVED_PREFIXES, ...apiPrefixes];
  return (path) => prefixes.some((prefix) => path === prefix || path.startsWith(`${prefix}/`));
}
