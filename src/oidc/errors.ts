import * as client from 'openid-client';
import { TokenHandlerError } from '../errors.js';

/**
 * What a failed provider call means for the session (docs/contracts.md "Refresh
 * outcomes"):
 * - `invalid_grant`: the grant is unusable (invalid_grant, any other 400 error except the client
 *   ones, a 400 without a parseable body): the user must log in again.
 * - `config_fault`: our client registration or configuration is wrong (invalid_client,
 *   unauthorized_client, a 401, a wrong endpoint): log loudly, keep the session.
 * - `transient`: network error, timeout, 429, 5xx: keep the session, try again later.
 * - `invalid_response`: the provider answered something we must not accept (bad ID token,
 *   missing access token): keep the session, log loudly.
 */
export type ProviderFailureKind = 'invalid_grant' | 'config_fault' | 'transient' | 'invalid_response';

/** What the provider answered, for logs: never the body, which could hold a token. */
export interface ProviderAnswer {
  status: number;
  contentType?: string;
  /** From Content-Length, or counted when the body was not read; absent when unknown. */
  bodyBytes?: number;
}

export interface ProviderErrorDetails {
  /** The OAuth `error` code when the provider sent one. */
  oauthError?: string;
  answer?: ProviderAnswer;
  /** The provider's own Retry-After (seconds), passed on to the browser. */
  retryAfterSeconds?: number;
  /** Configuration keys to check, for faults the operator has to fix. */
  configKeys?: readonly string[];
  /** What to try, in words (e.g. the client_secret_basic encoding switch). */
  hint?: string;
  /** The call asked for a token for this API (a route's resource or exchange audience). */
  api?: string;
  cause?: unknown;
}

export class ProviderError extends TokenHandlerError {
  readonly code = 'ERR_TH_PROVIDER';
  readonly oauthError?: string;
  readonly answer?: ProviderAnswer;
  readonly retryAfterSeconds?: number;
  readonly configKeys?: readonly string[];
  readonly hint?: string;
  readonly api?: string;

  constructor(
    readonly kind: ProviderFailureKind,
    message: string,
    details: ProviderErrorDetails = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    if (details.oauthError !== undefined) this.oauthError = details.oauthError;
    if (details.answer !== undefined) this.answer = details.answer;
    if (details.retryAfterSeconds !== undefined) this.retryAfterSeconds = details.retryAfterSeconds;
    if (details.configKeys !== undefined) this.configKeys = details.configKeys;
    if (details.hint !== undefined) this.hint = details.hint;
    if (details.api !== undefined) this.api = details.api;
  }

  /** Fields for a log line: message, OAuth error, status, content type, body size, keys, hint. */
  logFields(): Record<string, unknown> {
    return {
      err: this.message,
      ...(this.oauthError !== undefined ? { oauthError: this.oauthError } : {}),
      ...(this.answer !== undefined ? { provider: this.answer } : {}),
      ...(this.retryAfterSeconds !== undefined ? { retryAfterSeconds: this.retryAfterSeconds } : {}),
      ...(this.configKeys !== undefined ? { check: this.configKeys } : {}),
      ...(this.hint !== undefined ? { hint: this.hint } : {}),
      ...(this.api !== undefined ? { api: this.api } : {}),
    };
  }
}

/** The keys to check when the token endpoint refuses our client. */
export const CLIENT_KEYS = ['oidc.clientId', 'oidc.clientSecret', 'oidc.clientAuth'] as const;

export interface ClassifyOptions {
  /**
   * The call spends a grant (refresh token, authorization code): a 400 means that grant is
   * unusable. Off for client credentials, revocation and PAR, where a 400 is our request's fault.
   */
  grant?: boolean;
  /** Added to faults where the provider refused our client (e.g. which encoding switch to try). */
  clientRefusedHint?: string;
}

/** OAuth errors that blame the client, never the grant. */
const CLIENT_ERRORS = new Set(['invalid_client', 'unauthorized_client']);

/** Upper bound on a Retry-After passed on to browsers: a provider's hour-long value is not a reason to stall a page that long. */
const MAX_RETRY_AFTER_SECONDS = 300;

/** Maps anything openid-client (or fetch) throws to a ProviderError. Exhaustive: unknown → invalid_response. */
export async function classifyProviderError(err: unknown, operation: string, options: ClassifyOptions = {}): Promise<ProviderError> {
  if (err instanceof ProviderError) return err;
  if (err instanceof client.ResponseBodyError) {
    return byStatus(operation, options, err.status, err.error, await answerOf(err.response), retryAfterOf(err.response), err, err.error_description);
  }
  if (err instanceof client.WWWAuthenticateChallengeError) {
    // The provider answered with a challenge (usually a 401 refusing our client authentication).
    const error = err.cause.find((challenge) => challenge.parameters.error)?.parameters.error;
    return byStatus(operation, options, err.status, error, await answerOf(err.response), retryAfterOf(err.response), err);
  }
  if (err instanceof client.AuthorizationResponseError) {
    // The provider sent the browser back with an error (access_denied, login_required, …).
    const description = `${operation}: provider returned ${err.error}${err.error_description ? ` (${err.error_description})` : ''}`;
    const details: ProviderErrorDetails = { oauthError: err.error, cause: err };
    if (CLIENT_ERRORS.has(err.error)) Object.assign(details, clientRefused(options));
    return new ProviderError(CLIENT_ERRORS.has(err.error) ? 'config_fault' : 'invalid_response', description, details);
  }
  const timeout = timeoutOf(err);
  if (timeout) return new ProviderError('transient', `${operation}: provider did not answer in time (${timeout})`, { cause: err });
  const network = networkCauseOf(err);
  if (network) return new ProviderError('transient', `${operation}: provider unreachable (${network})`, { cause: err });
  // openid-client reports "unexpected status code" and "not JSON" with the Response as cause.
  const response = responseOf(err);
  if (response) {
    return byStatus(operation, options, response.status, undefined, await answerOf(response), retryAfterOf(response), err);
  }
  return new ProviderError('invalid_response', `${operation}: provider response rejected (${describeError(err)})`, { cause: err });
}

/** The table of docs/contracts.md "Refresh outcomes", extended to the other token-endpoint calls. */
function byStatus(
  operation: string,
  options: ClassifyOptions,
  status: number,
  error: string | undefined,
  answer: ProviderAnswer,
  retryAfterSeconds: number | undefined,
  cause: unknown,
  errorDescription?: string,
): ProviderError {
  const what = error ? `${error}${errorDescription ? ` (${errorDescription})` : ''}` : `no OAuth error (${answer.contentType ?? 'no content type'}, ${answer.bodyBytes ?? 'unknown'} bytes)`;
  const message = `${operation}: provider answered HTTP ${status} ${what}`;
  const base: ProviderErrorDetails = { answer, cause, ...(error ? { oauthError: error } : {}) };
  if (status === 429 || status >= 500) {
    return new ProviderError('transient', message, { ...base, ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}) });
  }
  if (status >= 200 && status < 300) return new ProviderError('invalid_response', message, base);
  // DPoP (RFC 9449): a nonce refused again after openid-client's one retry with it is the
  // provider's nonce rotating under load, not the grant; a proof refused is our key or clock.
  if (error === 'use_dpop_nonce') return new ProviderError('transient', message, base);
  if (error === 'invalid_dpop_proof') return new ProviderError('config_fault', message, { ...base, configKeys: ['oidc.dpop', 'oidc.dpopKeyFile'], hint: "the provider refused token-handler's DPoP proof: check the key's algorithm against the provider's dpop_signing_alg_values_supported, and this host's clock" });
  if ((error !== undefined && CLIENT_ERRORS.has(error)) || status === 401) {
    return new ProviderError('config_fault', message, { ...base, ...clientRefused(options) });
  }
  if (error === 'invalid_grant' || (status === 400 && options.grant)) {
    return new ProviderError('invalid_grant', message, base);
  }
  // 3xx, 403, 404, 405, or a 400 to a call that spends no grant: the request we send is wrong.
  const keys = status === 400 ? ['oidc.scopes', ...CLIENT_KEYS] : ['oidc.issuer'];
  return new ProviderError('config_fault', message, { ...base, configKeys: keys });
}

function clientRefused(options: ClassifyOptions): Pick<ProviderErrorDetails, 'configKeys' | 'hint'> {
  return { configKeys: CLIENT_KEYS, ...(options.clientRefusedHint ? { hint: options.clientRefusedHint } : {}) };
}

/** Status, content type and size of an answer; the body is counted, never kept. */
async function answerOf(response: Response): Promise<ProviderAnswer> {
  const answer: ProviderAnswer = { status: response.status };
  const contentType = response.headers.get('content-type');
  if (contentType) answer.contentType = contentType;
  const length = response.headers.get('content-length');
  if (length !== null && /^\d+$/.test(length)) answer.bodyBytes = Number(length);
  else if (!response.bodyUsed && response.body) {
    const counted = await countBytes(response.body);
    if (counted !== undefined) answer.bodyBytes = counted;
  }
  return answer;
}

/** Reads at most 1 MiB of an unread body to count it; undefined when it cannot be read. */
async function countBytes(body: ReadableStream<Uint8Array>): Promise<number | undefined> {
  let total = 0;
  try {
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return total;
      total += value.byteLength;
      if (total > 1 << 20) {
        await reader.cancel();
        return total;
      }
    }
  } catch {
    return undefined;
  }
}

/** Retry-After as delta-seconds or an HTTP date (RFC 9110 §10.2.3), bounded to 1..300 s. */
export function retryAfterOf(response: Response, now = Date.now()): number | undefined {
  const value = response.headers.get('retry-after')?.trim();
  if (!value) return undefined;
  let seconds: number;
  if (/^\d+$/.test(value)) seconds = Number(value);
  else {
    // An HTTP date always names its day or month; anything else (e.g. "-5") is no Retry-After.
    const at = /[a-z]/i.test(value) ? Date.parse(value) : Number.NaN;
    if (Number.isNaN(at)) return undefined;
    seconds = Math.ceil((at - now) / 1000);
  }
  return Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, seconds));
}

function responseOf(err: unknown): Response | undefined {
  const cause = (err as { cause?: unknown } | null)?.cause;
  return cause instanceof Response ? cause : undefined;
}

/** "TimeoutError" and friends, named; undefined when err is no timeout. */
function timeoutOf(err: unknown): string | undefined {
  for (let current = err, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    if (current.name === 'TimeoutError' || current.name === 'AbortError') return current.name;
    const code = (current as { code?: unknown }).code;
    if (code === 'OAUTH_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return String(code);
    }
  }
  return undefined;
}

/**
 * The socket-level cause of a failed fetch ("ECONNREFUSED 127.0.0.1:9", "ENOTFOUND idp.example"),
 * which fetch hides behind TypeError('fetch failed'); undefined when err is no network failure.
 */
export function networkCauseOf(err: unknown): string | undefined {
  if (!(err instanceof TypeError) || err.message !== 'fetch failed') {
    // Wrapped (e.g. by openid-client): look at the cause.
    const cause = (err as { cause?: unknown } | null)?.cause;
    return cause instanceof Error && cause !== err ? networkCauseOf(cause) : undefined;
  }
  const cause = err.cause;
  if (!(cause instanceof Error)) return 'fetch failed';
  // Several addresses tried (happy eyeballs): each failed; the first says enough.
  const first = cause instanceof AggregateError && cause.errors[0] instanceof Error ? cause.errors[0] : cause;
  const code = (first as { code?: unknown }).code;
  return typeof code === 'string' ? `${code}: ${first.message}` : `${first.name}: ${first.message}`;
}

export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const inner = err.cause instanceof Error ? ` (${describeError(err.cause)})` : '';
    return `${typeof code === 'string' ? `${err.name} ${code}` : err.name}: ${err.message}${inner}`;
  }
  return String(err);
}

/** Why discovery failed, for the log: a configuration error to fix, or an outage to wait out. */
export interface DiscoveryFailure {
  configError: boolean;
  /** What went wrong and what to fix, in words (the log line's `reason`). */
  reason: string;
  fields: Record<string, unknown>;
}

/** Names the URL, the status, both issuers or the network cause, and the keys to check. */
export function discoveryFailure(err: unknown, issuer: string): DiscoveryFailure {
  const url = discoveryUrlOf(issuer);
  const check = ['oidc.issuer'];
  if (err instanceof client.ClientError && err.code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED') {
    const reported = (err.cause as { body?: { issuer?: unknown } } | undefined)?.body?.issuer;
    return {
      configError: true,
      reason: 'the provider reports another issuer than oidc.issuer (they must match exactly: scheme, host, port, path, trailing slash)',
      fields: { url, configuredIssuer: issuer, reportedIssuer: reported, check },
    };
  }
  const timeout = timeoutOf(err);
  if (timeout) return { configError: false, reason: 'provider did not answer in time', fields: { url, cause: timeout } };
  const network = networkCauseOf(err);
  if (network) {
    // An unknown host name is a typo far more often than a DNS outage.
    const configError = network.startsWith('ENOTFOUND');
    return {
      configError,
      reason: configError ? 'the issuer host name does not resolve' : 'provider unreachable',
      fields: { url, cause: network, ...(configError ? { check } : {}) },
    };
  }
  const response = responseOf(err);
  if (response) {
    const status = response.status;
    const fields = { url: response.url || url, status, contentType: response.headers.get('content-type') ?? undefined };
    if (status === 429 || status >= 500) return { configError: false, reason: 'provider answered with a server error', fields };
    return {
      configError: true,
      reason: `${status === 200 ? 'the discovery URL does not serve JSON' : `the discovery URL answered HTTP ${status}`}; is oidc.issuer the exact issuer (with its path, e.g. /realms/<name>)?`,
      fields: { ...fields, check },
    };
  }
  return {
    configError: true,
    reason: 'the discovery document was refused',
    fields: { url, err: describeError(err), check },
  };
}

function discoveryUrlOf(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
}
