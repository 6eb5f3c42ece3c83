import type * as client from 'openid-client';
import { decodeJwt } from 'jose';
import { ProviderError } from './errors.js';

/** The tokens of one token-endpoint response, normalised. */
export interface TokenSet {
  accessToken: string;
  tokenType: string;
  /** Epoch milliseconds. */
  accessTokenExpiresAt: number;
  refreshToken?: string;
  idToken?: string;
  scope?: string;
  /** Validated ID-token claims, when an ID token came with the response. */
  claims?: Record<string, unknown>;
}

type TokenEndpointResult = client.TokenEndpointResponse & client.TokenEndpointResponseHelpers;

/**
 * Longest access-token life believed: a provider's `expires_in` of days or years only means
 * an earlier refresh than needed, never a token kept past what the provider may revoke.
 */
export const MAX_ACCESS_TOKEN_SECONDS = 86_400;

/**
 * Expiry comes from `expires_in` (openid-client already accepts it as a string, e.g.
 * "3600"), capped at MAX_ACCESS_TOKEN_SECONDS; when absent or 0 (some providers send 0 for
 * "unknown"), from the access token's own `exp` if it is a JWT; else from the configured
 * default (docs/contracts.md "Refresh-token rules": expires_in may be absent).
 */
export function tokenSetFrom(
  response: TokenEndpointResult,
  defaults: { now: number; defaultAccessTokenSeconds: number; /** The call carried a DPoP proof (oidc.dpop). */ dpop?: boolean },
): TokenSet {
  if (typeof response.access_token !== 'string' || response.access_token === '') {
    throw new ProviderError('invalid_response', 'token response carries no access_token');
  }
  const tokenType = normaliseTokenType(response.token_type);
  if (tokenType === 'DPoP' && !defaults.dpop) {
    // openid-client accepts it, but such a token is useless without a proof we never make.
    throw new ProviderError('invalid_response', 'token response carries a DPoP-bound token (token_type DPoP), but token-handler sent no DPoP proof: turn DPoP binding off for this client at the provider, or set oidc.dpop: true', { configKeys: ['oidc.dpop'] });
  }
  const set: TokenSet = {
    accessToken: response.access_token,
    tokenType,
    accessTokenExpiresAt: expiryOf(response, defaults),
  };
  if (response.refresh_token) set.refreshToken = response.refresh_token;
  if (response.id_token) set.idToken = response.id_token;
  if (response.scope) set.scope = response.scope;
  const claims = response.claims();
  if (claims) set.claims = { ...claims };
  return set;
}

function expiryOf(response: TokenEndpointResult, defaults: { now: number; defaultAccessTokenSeconds: number }): number {
  const cap = defaults.now + MAX_ACCESS_TOKEN_SECONDS * 1000;
  const expiresIn = response.expires_in;
  if (typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn > 0) {
    return Math.min(defaults.now + expiresIn * 1000, cap);
  }
  const exp = jwtExpiry(response.access_token);
  if (exp !== undefined && exp > defaults.now) return Math.min(exp, cap);
  return defaults.now + defaults.defaultAccessTokenSeconds * 1000;
}

function jwtExpiry(token: string): number | undefined {
  if (token.split('.').length !== 3) return undefined;
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** `token_type` is case-insensitive (RFC 6749 §5.1); send the conventional spelling. */
function normaliseTokenType(tokenType: string | undefined): string {
  const lower = (tokenType ?? 'bearer').toLowerCase();
  if (lower === 'bearer') return 'Bearer';
  if (lower === 'dpop') return 'DPoP';
  return tokenType ?? 'Bearer';
}
