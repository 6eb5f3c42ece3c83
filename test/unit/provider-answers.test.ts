/**
 * How token-handler reads what a provider answered, where a whole flow would say less than a
 * table: Retry-After in its two forms, and the access token's life from expires_in.
 */
import { describe, expect, it } from 'vitest';
import { retryAfterOf } from '../../src/oidc/errors.js';
import { MAX_ACCESS_TOKEN_SECONDS, tokenSetFrom } from '../../src/oidc/token-set.js';

describe('Retry-After from the provider', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  const withHeader = (value?: string) => new Response(null, { status: 503, headers: value === undefined ? {} : { 'retry-after': value } });

  it.each([
    ['17', 17],
    ['0', 1],
    ['86400', 300],
    ['Thu, 01 Jan 2026 00:00:42 GMT', 42],
    ['Wed, 31 Dec 2025 23:00:00 GMT', 1],
  ])('reads %s as %i seconds (1..300)', (value, seconds) => {
    expect(retryAfterOf(withHeader(value), now)).toBe(seconds);
  });

  it.each([undefined, '', 'soon', '-5'])('ignores %s', (value) => {
    expect(retryAfterOf(withHeader(value), now)).toBeUndefined();
  });
});

describe('access token life', () => {
  const now = 1_700_000_000_000;
  const defaults = { now, defaultAccessTokenSeconds: 300 };
  const response = (members: Record<string, unknown>) =>
    ({ access_token: 'opaque-access-token-value', token_type: 'bearer', ...members, claims: () => undefined }) as unknown as Parameters<typeof tokenSetFrom>[0];
  const jwtExpiringIn = (seconds: number) =>
    `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ exp: now / 1000 + seconds })).toString('base64url')}.sig`;

  it('is expires_in when given', () => {
    expect(tokenSetFrom(response({ expires_in: 3600 }), defaults).accessTokenExpiresAt).toBe(now + 3600_000);
  });

  it(`is capped at ${MAX_ACCESS_TOKEN_SECONDS} s when expires_in is huge`, () => {
    expect(tokenSetFrom(response({ expires_in: 10 * 365 * 86400 }), defaults).accessTokenExpiresAt).toBe(now + MAX_ACCESS_TOKEN_SECONDS * 1000);
  });

  it('is the configured default when expires_in is 0 or missing and the token is opaque (not "expired at once")', () => {
    expect(tokenSetFrom(response({ expires_in: 0 }), defaults).accessTokenExpiresAt).toBe(now + 300_000);
    expect(tokenSetFrom(response({}), defaults).accessTokenExpiresAt).toBe(now + 300_000);
  });

  it("is the JWT access token's own exp when expires_in is missing", () => {
    expect(tokenSetFrom(response({ access_token: jwtExpiringIn(120) }), defaults).accessTokenExpiresAt).toBe(now + 120_000);
  });

  it('sends the conventional spelling of the token type, whatever case the provider used', () => {
    expect(tokenSetFrom(response({ token_type: 'bearer' }), defaults).tokenType).toBe('Bearer');
    expect(tokenSetFrom(response({ token_type: 'BEARER' }), defaults).tokenType).toBe('Bearer');
  });
});
