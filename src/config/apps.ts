/**
 * Several apps in one process (`apps:`): how an app's keys combine with the top level's,
 * the rules across apps (unique names, matches, cookie names), and the per-app TH_APPS_*
 * variables. The single-app form (no `apps:`) is one app named `default` that matches
 * every request.
 *
 * Inheritance: an app's `oidc`, `session`, `csrf` and `errors` are the top level's with the
 * app's own keys on top (except `oidc.postLogoutRedirectUri`, which defaults to the app's
 * own publicUrl); `publicUrl` and `routes` are the app's alone; everything else (listen,
 * session.redis, refresh, logging, metrics, limits, shutdown, rateLimit, admin) is
 * process-wide.
 */
import type { TSchema } from '@sinclair/typebox';
import { getAt, isRecord, isSection, type KeyPath } from './paths.js';
import { quote, type ProblemList } from './problems.js';
import { AppSchema } from './schema.js';
import type { Config } from './types.js';

/** The name of the one app of the single-app form (the `app` label of its metrics). */
export const DEFAULT_APP_NAME = 'default';

/** The sections an app inherits from the top level (its own keys on top). */
export const INHERITED_SECTIONS = ['oidc', 'session', 'csrf', 'errors'] as const;
/** Top-level keys an app has of its own: valid at the top level only in the single-app form. */
export const APP_ONLY_KEYS = ['publicUrl', 'routes'] as const;
/** Keys whose checks and rules run per app (`apps[].<key>` as well as the top-level key). */
export const PER_APP_KEYS: readonly string[] = [...INHERITED_SECTIONS, ...APP_ONLY_KEYS];
/** Top-level keys that an app cannot have on its own: one for the process. */
const PROCESS_WIDE_PATHS: readonly KeyPath[] = [['session', 'redis']];

/** One app of the process, with its complete configuration. */
export interface ResolvedApp {
  name: string;
  /** Lower-case host the app answers; undefined in the single-app form (every host). */
  host: string | undefined;
  /** '' (the whole host) or a path prefix such as /partners. */
  pathPrefix: string;
  /** The configuration of this app alone, as in the single-app form (process-wide keys included). */
  config: Config;
}

/**
 * The apps of a validated configuration. `parseConfig` stores each app resolved (every
 * inherited key filled), so this only assembles them; a configuration built by hand gets the
 * same inheritance here.
 */
export function appsOf(config: Config): ResolvedApp[] {
  if (!config.apps) return [{ name: DEFAULT_APP_NAME, host: undefined, pathPrefix: '', config }];
  return config.apps.map((app) => {
    const effective = effectiveAppConfig(config as unknown as Record<string, unknown>, app as unknown as Record<string, unknown>) as unknown as Config;
    const match = effective.apps![0]!.match;
    return { name: app.name, host: match.host, pathPrefix: match.pathPrefix ?? '', config: effective };
  });
}

/** The host of a URL, lower-case, without a port; undefined for no URL. */
export function hostOf(url: unknown): string | undefined {
  if (typeof url !== 'string') return undefined;
  try {
    return new URL(url).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

/**
 * One app's configuration as the single-app form would say it: the top level with the
 * app's publicUrl and routes, and its inherited sections merged. `apps` holds the app
 * alone, with its match completed (host from publicUrl when not given).
 */
export function effectiveAppConfig(top: Record<string, unknown>, app: Record<string, unknown>): Record<string, unknown> {
  const section = (key: string): Record<string, unknown> => (isRecord(top[key]) ? (top[key] as Record<string, unknown>) : {});
  const own = (key: string): Record<string, unknown> => (isRecord(app[key]) ? (app[key] as Record<string, unknown>) : {});
  const { postLogoutRedirectUri: _notInherited, ...oidc } = section('oidc');
  const match = own('match');
  const pathPrefix = typeof match.pathPrefix === 'string' ? match.pathPrefix : '';
  const appOidc = own('oidc');
  const publicUrl = app.publicUrl;
  const origin = typeof publicUrl === 'string' ? originOf(publicUrl) : undefined;
  const postLogout = appOidc.postLogoutRedirectUri ?? (origin ? `${origin}${pathPrefix}/` : undefined);
  const resolvedMatch = { ...match, host: typeof match.host === 'string' ? match.host.toLowerCase() : hostOf(publicUrl) };
  return {
    ...top,
    publicUrl,
    oidc: { ...oidc, ...appOidc, ...(postLogout === undefined ? {} : { postLogoutRedirectUri: postLogout }) },
    session: { ...section('session'), ...own('session') },
    csrf: { ...section('csrf'), ...own('csrf') },
    errors: { ...section('errors'), ...own('errors') },
    routes: Array.isArray(app.routes) ? app.routes : [],
    apps: [{ ...app, match: resolvedMatch }],
  };
}

function originOf(url: string): string | undefined {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

/** The app as `parseConfig` stores it: its sections complete, its match's host filled. */
export function storedApp(effective: Record<string, unknown>): Record<string, unknown> {
  const app = (effective.apps as Array<Record<string, unknown>>)[0]!;
  const { redis: _processWide, ...session } = effective.session as Record<string, unknown>;
  return {
    ...app,
    publicUrl: effective.publicUrl,
    oidc: effective.oidc,
    session,
    csrf: effective.csrf,
    errors: effective.errors,
    routes: effective.routes,
  };
}

/** Where a problem of one app's effective configuration is reported. */
export function appPath(index: number, path: KeyPath): KeyPath {
  return PROCESS_WIDE_PATHS.some((wide) => wide.every((segment, i) => path[i] === segment)) ? path : ['apps', index, ...path];
}

/**
 * The problems of one app's effective configuration, under `apps[i]`. A key counts as
 * failed when the app's own key or the inherited top-level one was reported.
 */
export function appProblems(problems: ProblemList, index: number): Pick<ProblemList, 'addCrossKey' | 'hasFailed'> {
  return {
    addCrossKey: (path, text) => problems.addCrossKey(appPath(index, path), text),
    hasFailed: (path) => problems.hasFailed(appPath(index, path)) || problems.hasFailed(path),
  };
}

/** `shop-admin` → `SHOP_ADMIN`, the app's part of its variables' names. */
export function appEnvSegment(name: string): string {
  return name.toUpperCase().replace(/-/g, '_');
}

/** Keys of an app that have a variable: every key below its sections, and its routes (JSON). */
function appKeyBindings(schema: TSchema = AppSchema, path: string[] = []): Array<{ path: string[]; schema: TSchema }> {
  if (!isSection(schema)) return [];
  return Object.entries(schema.properties).flatMap(([key, child]) => {
    if (path.length === 0 && key === 'name') return [];
    return isSection(child) ? appKeyBindings(child, [...path, key]) : [{ path: [...path, key], schema: child }];
  });
}
const APP_KEY_BINDINGS = appKeyBindings();

/** The variables of the app named `name`: `TH_APPS_<NAME>_<KEY PATH>`, with the key path relative to the app. */
export function appEnvBindings(name: string, envName: (path: readonly string[]) => string): Array<{ name: string; path: string[]; schema: TSchema }> {
  return APP_KEY_BINDINGS.map(({ path, schema }) => ({ name: `TH_APPS_${appEnvSegment(name)}_${envName(path).slice('TH_'.length)}`, path, schema }));
}

/** Rules across apps: names, variables, matches and cookie names that must not collide; app-only keys at the top level. */
export function checkApps(draft: Record<string, unknown>, problems: ProblemList): void {
  const apps = draft.apps;
  if (!Array.isArray(apps)) return;
  if (draft.publicUrl !== undefined) {
    problems.addCrossKey(['publicUrl'], 'is set together with apps; each app has its own (apps[].publicUrl): move it into the apps');
  }
  if (Array.isArray(draft.routes) && draft.routes.length > 0) {
    problems.addCrossKey(['routes'], 'is set together with apps; each app has its own routes (apps[].routes): move them into the app they belong to');
  }
  const names = new Map<string, number>();
  const segments = new Map<string, number>();
  const matches = new Map<string, number>();
  const cookies = new Map<string, number>();
  apps.forEach((raw: unknown, index) => {
    if (!isRecord(raw)) return;
    const app = raw;
    const name = typeof app.name === 'string' ? app.name : undefined;
    if (name !== undefined && !problems.hasFailed(['apps', index, 'name'])) {
      const first = names.get(name);
      const sameVariables = segments.get(appEnvSegment(name));
      if (first !== undefined) {
        problems.addCrossKey(['apps', index, 'name'], `is ${quote(name)}, the same as apps[${first}].name; each app needs its own name`);
      } else if (sameVariables !== undefined) {
        problems.addCrossKey(
          ['apps', index, 'name'],
          `is ${quote(name)}, whose variables (TH_APPS_${appEnvSegment(name)}_*) are those of apps[${sameVariables}].name; expected a name that differs in more than "-" and "_"`,
        );
      } else {
        names.set(name, index);
        segments.set(appEnvSegment(name), index);
      }
    }
    const match = isRecord(app.match) ? app.match : {};
    const host = typeof match.host === 'string' ? match.host : hostOf(app.publicUrl);
    if (host === undefined) return;
    const pathPrefix = typeof match.pathPrefix === 'string' ? match.pathPrefix : '';
    const key = `${host}${pathPrefix}`;
    const first = matches.get(key);
    if (first !== undefined) {
      problems.addCrossKey(
        ['apps', index, 'match'],
        `is host ${quote(host)}${pathPrefix ? ` with pathPrefix ${quote(pathPrefix)}` : ''}, the same as apps[${first}].match; each app needs its own host, or its own pathPrefix on a shared host`,
      );
    } else {
      matches.set(key, index);
    }
    // The browser sends every Path=/ cookie of a host to every app on it.
    const session = isRecord(app.session) ? app.session : {};
    const inherited = isRecord(draft.session) ? draft.session.cookieName : undefined;
    const cookieName = typeof session.cookieName === 'string' ? session.cookieName : typeof inherited === 'string' ? inherited : undefined;
    if (cookieName === undefined) return;
    const cookieKey = `${host} ${cookieName}`;
    const sameCookie = cookies.get(cookieKey);
    if (sameCookie !== undefined) {
      problems.addCrossKey(
        ['apps', index, 'session', 'cookieName'],
        `is ${quote(cookieName)}, the same as apps[${sameCookie}]'s on host ${quote(host)}; apps on one host need distinct cookie names (e.g. th_${name ?? 'app'})`,
      );
    } else {
      cookies.set(cookieKey, index);
    }
  });
}

/** Keys every app needs, from itself or inherited from the top level. */
export const REQUIRED_APP_KEYS: readonly KeyPath[] = [
  ['oidc', 'issuer'],
  ['oidc', 'clientId'],
  ['session', 'secrets'],
];

/** The top-level keys the single-app form requires that `apps:` may leave to each app. */
export const TOP_LEVEL_KEYS_APPS_MAY_GIVE: readonly KeyPath[] = [['publicUrl'], ...REQUIRED_APP_KEYS];

/** A required key an app neither sets nor inherits. */
export function missingAppKeys(effective: Record<string, unknown>): KeyPath[] {
  return REQUIRED_APP_KEYS.filter((path) => getAt(effective, path) === undefined);
}
