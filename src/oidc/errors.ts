import * as client from 'openid-client';

/**
 * What a failed provider call means for the session (DESIGN.md, refresh-token rules):
 * - `invalid_grant`: the grant is over (expired, revoked, reused): the user must log in again.
 * - `config_fault`: our client registration or configuration is wrong: log loudly, keep the session.
 * - `transient`: network error, timeout, 5xx: keep the session, try again later.
 * - `invalid_response`: the provider answered something we must not accept (bad ID token,
 *   missing access token): keep the session, log loudly.
 */
export type ProviderFailureKind = 'invalid_grant' | 'config_fault' | 'transient' | 'invalid_response';

export class ProviderError extends Error {
  constructor(
    readonly kind: ProviderFailureKind,
    message: string,
    /** The OAuth `error` code when the provider sent one. */
    readonly oauthError?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ProviderError';
  }
}

/** Maps anything openid-client (or fetch) throws to a ProviderError. Exhaustive: unknown → transient. */
export function classifyProviderError(err: unknown, operation: string): ProviderError {
  if (err instanceof ProviderError) return err;
  if (err instanceof client.ResponseBodyError) {
    const description = `${operation}: provider answered ${err.status} ${err.error}${err.error_description ? ` (${err.error_description})` : ''}`;
    if (err.error === 'invalid_grant') return new ProviderError('invalid_grant', description, err.error, { cause: err });
    if (err.status >= 500) return new ProviderError('transient', description, err.error, { cause: err });
    // invalid_client, unauthorized_client, invalid_scope, …: our registration or configuration is wrong.
    return new ProviderError('config_fault', description, err.error, { cause: err });
  }
  if (err instanceof client.WWWAuthenticateChallengeError) {
    // A 401 with a challenge from the token endpoint: our client authentication was refused.
    const error = err.cause[0]?.parameters.error ?? 'invalid_client';
    const kind = err.status >= 500 ? 'transient' : 'config_fault';
    return new ProviderError(kind, `${operation}: provider answered ${err.status} ${error} (challenge)`, error, { cause: err });
  }
  if (err instanceof client.AuthorizationResponseError) {
    // The provider sent the browser back with an error (access_denied, login_required, …).
    const description = `${operation}: provider returned ${err.error}${err.error_description ? ` (${err.error_description})` : ''}`;
    return new ProviderError('invalid_response', description, err.error, { cause: err });
  }
  if (isAbortOrNetwork(err)) {
    return new ProviderError('transient', `${operation}: provider unreachable or too slow (${describe(err)})`, undefined, {
      cause: err,
    });
  }
  const status = responseStatusOf(err);
  if (status !== undefined && (status >= 500 || status === 429)) {
    return new ProviderError('transient', `${operation}: provider answered HTTP ${status}`, undefined, { cause: err });
  }
  return new ProviderError('invalid_response', `${operation}: provider response rejected (${describe(err)})`, undefined, {
    cause: err,
  });
}

function isAbortOrNetwork(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return true;
  // fetch reports connection failures as TypeError('fetch failed') with the socket error as cause.
  if (err instanceof TypeError && err.message === 'fetch failed') return true;
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error && cause !== err ? isAbortOrNetwork(cause) : false;
}

/** oauth4webapi attaches the unexpected Response as `cause` of its "unexpected status" errors. */
function responseStatusOf(err: unknown): number | undefined {
  const cause = (err as { cause?: unknown } | null)?.cause;
  return cause instanceof Response ? cause.status : undefined;
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${err.name} ${code}: ${err.message}` : `${err.name}: ${err.message}`;
  }
  return String(err);
}
