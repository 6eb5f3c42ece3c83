/**
 * The base of token-handler's own errors: each class has a stable `code` (as jose's and
 * @fastify/error's do), so callers branch on classes and codes, never on messages.
 */
export abstract class TokenHandlerError extends Error {
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Browser-facing errors. Every error a browser can see is one of these codes, sent as
 * JSON `{ error, error_description }` (docs/contracts.md "Browser errors"). Never a stack trace,
 * never a token: descriptions are fixed human text chosen here, not upstream messages.
 */
export type BrowserErrorCode =
  | 'login_required'
  | 'csrf_failed'
  | 'insufficient_claims'
  | 'step_up_required'
  | 'bad_request'
  | 'not_found'
  | 'not_supported'
  | 'idp_unavailable'
  | 'session_store_unavailable'
  | 'token_unavailable'
  | 'upstream_unavailable'
  | 'upstream_timeout'
  | 'token_rejected'
  | 'payload_too_large'
  | 'headers_too_large'
  | 'too_many_requests'
  | 'request_timeout'
  | 'internal_error';

const statusOf: Record<BrowserErrorCode, number> = {
  login_required: 401,
  csrf_failed: 403,
  insufficient_claims: 403,
  step_up_required: 401,
  bad_request: 400,
  not_found: 404,
  not_supported: 501,
  idp_unavailable: 503,
  session_store_unavailable: 503,
  token_unavailable: 503,
  upstream_unavailable: 502,
  upstream_timeout: 504,
  token_rejected: 401,
  payload_too_large: 413,
  headers_too_large: 431,
  too_many_requests: 429,
  request_timeout: 408,
  internal_error: 500,
};

/** An answer for the browser: its `code` is the JSON `error` it gets. */
export class BrowserError extends TokenHandlerError {
  readonly status: number;
  constructor(
    readonly code: BrowserErrorCode,
    readonly description: string,
    /** Seconds, sent as `Retry-After` (503s). */
    readonly retryAfterSeconds?: number,
  ) {
    super(`${code}: ${description}`);
    this.status = statusOf[code];
  }

  toJSON(): { error: BrowserErrorCode; error_description: string } {
    return { error: this.code, error_description: this.description };
  }
}

/** What a step-up login must ask for, as the browser gets it with `step_up_required`. */
export interface StepUp {
  /** Space-separated, as the `acr_values` login parameter. */
  acr_values?: string;
  max_age?: number;
  /** A same-origin `/auth/login` URL asking for it. */
  login_url: string;
}

/** 401 `step_up_required`: the body also carries what the new login must ask for. */
export class StepUpRequiredError extends BrowserError {
  constructor(
    description: string,
    readonly stepUp: StepUp,
  ) {
    super('step_up_required', description);
  }

  override toJSON(): { error: BrowserErrorCode; error_description: string } & StepUp {
    return { ...super.toJSON(), ...this.stepUp };
  }
}

export const loginRequired = (description = 'No valid session: sign in again.') =>
  new BrowserError('login_required', description);
export const csrfFailed = (description: string) => new BrowserError('csrf_failed', description);
export const badRequest = (description: string) => new BrowserError('bad_request', description);
export const idpUnavailable = (retryAfterSeconds = 5) =>
  new BrowserError(
    'idp_unavailable',
    'The identity provider cannot be reached right now; the session is kept, try again shortly.',
    retryAfterSeconds,
  );
export const sessionStoreUnavailable = (retryAfterSeconds = 2) =>
  new BrowserError(
    'session_store_unavailable',
    'The session store cannot be reached right now; try again shortly.',
    retryAfterSeconds,
  );
export const tokenUnavailable = (retryAfterSeconds?: number) =>
  new BrowserError(
    'token_unavailable',
    retryAfterSeconds === undefined
      ? 'A token for the API behind this route could not be obtained; the session is kept.'
      : 'A token for the API behind this route could not be obtained right now; the session is kept, try again shortly.',
    retryAfterSeconds,
  );
export const upstreamUnavailable = () =>
  new BrowserError('upstream_unavailable', 'The API behind this route could not be reached.');
