import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import { badRequest, BrowserError, idpUnavailable, loginRequired, sessionStoreUnavailable, tokenUnavailable } from './errors.js';
import type { ProviderError } from './oidc/errors.js';
import { sendErrorPage } from './pages/error-page.js';
import { isPageLoad } from './pages/page-load.js';
import { SessionEndedError, SessionStoreUnavailableError } from './state/ports.js';

/** The provider calls whose failures reach a browser. */
export type ProviderCall = 'login' | 'sign-in' | 'refresh' | 'resource token' | 'token exchange' | 'client token' | 'logout token keys';

type Level = 'info' | 'warn' | 'error';
interface Answer {
  level: Level;
  message: string;
  answer: (err: ProviderError, retryAfterSeconds: number) => BrowserError;
}

const unavailable = (err: ProviderError, retryAfterSeconds: number) => idpUnavailable(err.retryAfterSeconds ?? retryAfterSeconds);
/** A per-API token: transient → with Retry-After; a refusal that waiting will not cure → without. */
const apiTokenTransient = (err: ProviderError, retryAfterSeconds: number) => tokenUnavailable(err.retryAfterSeconds ?? retryAfterSeconds);
const apiTokenRefused = () => tokenUnavailable();

/** The same answer whatever the kind of failure, except where `transient` is given apart. */
function everyKind(answer: Answer, transient: Answer = answer): Record<ProviderError['kind'], Answer> {
  return { transient, config_fault: answer, invalid_response: answer, invalid_grant: answer };
}

/**
 * What each kind of provider failure means for the browser, per call: one table instead of
 * a decision at every call site. A refused grant ends a refresh's session (the caller ends
 * it) but only fails a sign-in; an outage is a 503 that keeps the session everywhere.
 */
const ANSWERS: Record<ProviderCall, Record<ProviderError['kind'], Answer>> = {
  login: everyKind(
    { level: 'error', message: 'provider call failed: configuration or provider fault', answer: unavailable },
    { level: 'warn', message: 'provider unavailable', answer: unavailable },
  ),
  'sign-in': {
    transient: { level: 'warn', message: 'provider unavailable', answer: unavailable },
    config_fault: {
      level: 'error',
      message: 'sign-in failed: the provider refused this client; check the configuration keys named',
      answer: (err) => badRequest(`Sign-in failed: the identity provider refused this application${err.oauthError ? ` (${err.oauthError})` : ''}.`),
    },
    invalid_grant: {
      level: 'warn',
      message: 'sign-in failed',
      answer: (err) => badRequest(`Sign-in failed: ${err.oauthError ?? 'the sign-in response was refused by the provider, start again'}.`),
    },
    invalid_response: {
      level: 'warn',
      message: 'sign-in failed',
      answer: (err) => badRequest(`Sign-in failed: ${err.oauthError ?? 'the provider response was not valid'}.`),
    },
  },
  refresh: {
    invalid_grant: {
      level: 'info',
      message: 'refresh refused: the grant is unusable; session ended',
      answer: () => loginRequired('The session has ended at the identity provider: sign in again.'),
    },
    transient: { level: 'warn', message: 'refresh failed: provider unavailable; session kept', answer: unavailable },
    config_fault: { level: 'error', message: 'refresh failed: client configuration fault at the provider; session kept', answer: unavailable },
    invalid_response: { level: 'error', message: 'refresh failed: provider response rejected; session kept', answer: unavailable },
  },
  // A refresh_token grant for one route's RFC 8707 resource: the grant refused ends the
  // session like any refresh; the resource refused (invalid_target) is our configuration.
  'resource token': {
    invalid_grant: {
      level: 'info',
      message: 'resource token refused: the grant is unusable; session ended',
      answer: () => loginRequired('The session has ended at the identity provider: sign in again.'),
    },
    transient: { level: 'warn', message: 'resource token unavailable: provider unavailable; session kept', answer: apiTokenTransient },
    config_fault: {
      level: 'error',
      message: 'resource token refused: the provider does not grant this resource to this client (check routes[].resource and the provider); session kept',
      answer: apiTokenRefused,
    },
    invalid_response: { level: 'error', message: 'resource token unavailable: provider response rejected; session kept', answer: apiTokenRefused },
  },
  // RFC 8693 token exchange of the user's access token. invalid_grant reaches this table only
  // after the user's token was refreshed once and the exchange refused again.
  'token exchange': {
    invalid_grant: {
      level: 'warn',
      message: "token exchange refused the user's access token even after a refresh; session ended",
      answer: () => loginRequired('The identity provider no longer accepts this session for this API: sign in again.'),
    },
    transient: { level: 'warn', message: 'token exchange failed: provider unavailable; session kept', answer: apiTokenTransient },
    config_fault: {
      level: 'error',
      message: 'token exchange refused: check routes[].exchange (audience, scope) and that the provider allows this client to exchange tokens; session kept',
      answer: apiTokenRefused,
    },
    invalid_response: { level: 'error', message: 'token exchange failed: provider response rejected; session kept', answer: apiTokenRefused },
  },
  'client token': everyKind(
    { level: 'error', message: 'client credentials token unavailable', answer: unavailable },
    { level: 'warn', message: 'client credentials token unavailable', answer: unavailable },
  ),
  // Anyone can post a logout token: the provider's own Retry-After is not theirs to pass on.
  'logout token keys': everyKind({ level: 'warn', message: 'back-channel logout: provider keys unavailable', answer: (_err, retry) => idpUnavailable(retry) }),
};

/**
 * The browser's answer to a failed provider call, after one log line that says what the
 * provider answered (never a body or a token). `retryAfterSeconds` applies when the
 * provider sent none.
 */
export function answerProviderFailure(
  err: ProviderError,
  call: ProviderCall,
  log: FastifyBaseLogger,
  retryAfterSeconds: number,
  fields: Record<string, unknown> = {},
): BrowserError {
  const { level, message, answer } = ANSWERS[call][err.kind];
  log[level]({ ...err.logFields(), ...fields }, message);
  return answer(err, retryAfterSeconds);
}

/** Every error becomes one of the browser-facing codes; Fastify's own 4xx keep their status class. */
export function browserErrorOf(error: unknown): BrowserError {
  if (error instanceof BrowserError) return error;
  if (error instanceof SessionStoreUnavailableError) return sessionStoreUnavailable();
  if (error instanceof SessionEndedError) return loginRequired('The session has ended: sign in again.');
  const status = (error as { statusCode?: unknown }).statusCode;
  if (status === 413) return new BrowserError('payload_too_large', 'The request body is too large.');
  if (status === 431) return new BrowserError('headers_too_large', 'The request headers are too large.');
  if (status === 429) return new BrowserError('too_many_requests', 'Too many requests: slow down.');
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new BrowserError('bad_request', 'The request could not be understood.');
  }
  return new BrowserError('internal_error', 'Something went wrong in token-handler; the error has been logged.');
}

/**
 * token-handler's own error answers, never cached, never sniffed as something else: JSON
 * for scripts, and for a person's page load an HTML page or the SPA's error page.
 */
export function sendError(reply: FastifyReply, error: BrowserError): FastifyReply {
  // Refused before its body was read: close the connection after the answer rather than
  // read (and discard) a body nobody wants.
  if (reply.request.raw.complete === false) reply.header('connection', 'close');
  reply.code(error.status).header('x-request-id', reply.request.id).header('cache-control', 'no-store').header('x-content-type-options', 'nosniff');
  if (isPageLoad(reply.request)) return sendErrorPage(reply, error);
  return reply.type('application/json; charset=utf-8').send(error.toJSON());
}
