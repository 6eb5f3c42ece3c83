/**
 * The validated configuration of one token-handler instance, typed from the schema
 * (schema.ts) so a key cannot exist in one and not the other. Every key without `?` is
 * filled: defaults are applied by `loadConfig`, so the rest of the code never has to guess.
 */
import type { Static } from '@sinclair/typebox';
import type {
  ConfigSchema,
  CsrfSchema,
  ErrorsSchema,
  LimitsSchema,
  ListenSchema,
  LoggingSchema,
  MetricsSchema,
  OidcSchema,
  RateLimitSchema,
  AdminSchema,
  AppSchema,
  RedisSchema,
  RefreshSchema,
  RouteSchema,
  SessionSchema,
  ShutdownSchema,
} from './schema.js';

export type Config = Static<typeof ConfigSchema>;
export type ListenConfig = Static<typeof ListenSchema>;
export type OidcConfig = Static<typeof OidcSchema>;
export type SessionConfig = Static<typeof SessionSchema>;
export type RedisConfig = Static<typeof RedisSchema>;
export type RouteConfig = Static<typeof RouteSchema>;
export type RefreshConfig = Static<typeof RefreshSchema>;
export type CsrfConfig = Static<typeof CsrfSchema>;
export type LoggingConfig = Static<typeof LoggingSchema>;
export type MetricsConfig = Static<typeof MetricsSchema>;
export type LimitsConfig = Static<typeof LimitsSchema>;
export type ShutdownConfig = Static<typeof ShutdownSchema>;
export type RateLimitConfig = Static<typeof RateLimitSchema>;
export type AdminConfig = Static<typeof AdminSchema>;
export type ErrorsConfig = Static<typeof ErrorsSchema>;
/** One entry of `apps:` as written (sections partial: the rest is inherited). */
export type AppInput = Static<typeof AppSchema>;
/** A route that proxies API calls: every route but the frontend one, and it always has an upstream (rules.ts). */
export type ApiRouteConfig = RouteConfig & { upstream: string };

export type ClientAuthMethod = OidcConfig['clientAuth'];
/** How client_secret_basic builds its credentials: RFC 6749 §2.3.1 form-encodes id and secret first; `plain` does not. */
export type ClientSecretBasicEncoding = OidcConfig['clientSecretBasicEncoding'];
/** RFC 9126: `auto` pushes when the provider advertises a PAR endpoint, `always` requires one, `never` does not push. */
export type PushedAuthorizationRequests = OidcConfig['pushedAuthorizationRequests'];
export type SessionStoreKind = SessionConfig['store'];
export type RouteTokenMode = RouteConfig['token'];
export type SameSite = SessionConfig['sameSite'];
export type StripCookies = RouteConfig['stripCookies'];
/** What Fastify's `trustProxy` takes, short of a function. */
export type TrustProxy = ListenConfig['trustProxy'];
export type LogLevel = LoggingConfig['level'];
