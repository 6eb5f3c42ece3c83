import { describe, expect, it } from 'vitest';
import type { RouteConfig } from '../../src/config/types.js';
import { BrowserError } from '../../src/errors.js';
import { identityValue, RoutePolicy } from '../../src/proxy/route-policy.js';
import type { SessionRecord } from '../../src/state/record.js';

const NOW = Date.UTC(2026, 0, 1);

function policy(require: RouteConfig['require']): RoutePolicy {
  const p = RoutePolicy.forRoute({ require } as RouteConfig, 'https://app.example.test', () => NOW);
  if (!p) throw new Error('expected a policy');
  return p;
}

function session(claims: Record<string, unknown>): SessionRecord {
  return { id: 'x', accessToken: 'a', tokenType: 'Bearer', accessTokenExpiresAt: NOW + 60_000, claims: { sub: 'alice', ...claims }, createdAt: NOW, lastSeenAt: NOW };
}

/** The error code a session gets from the policy, or 'allowed'. */
function outcome(p: RoutePolicy, claims: Record<string, unknown>): string {
  try {
    p.check(session(claims), {});
    return 'allowed';
  } catch (err) {
    return (err as BrowserError).code;
  }
}

describe('a route policy', () => {
  it('is not built for a route without require, so such routes pay nothing per request', () => {
    expect(RoutePolicy.forRoute({} as RouteConfig, 'https://app.example.test', () => NOW)).toBeUndefined();
    expect(RoutePolicy.forRoute({ require: { claims: {} } } as RouteConfig, 'https://app.example.test', () => NOW)).toBeUndefined();
  });

  it('needs every listed value in an array claim', () => {
    const p = policy({ claims: { groups: ['admin', 'ops'] } });
    expect(outcome(p, { groups: ['ops', 'admin', 'staff'] })).toBe('allowed');
    expect(outcome(p, { groups: ['admin'] })).toBe('insufficient_claims');
    expect(outcome(p, {})).toBe('insufficient_claims');
  });

  it('compares a string, number or boolean claim with the listed value, and refuses objects', () => {
    expect(outcome(policy({ claims: { tenant: ['acme'] } }), { tenant: 'acme' })).toBe('allowed');
    expect(outcome(policy({ claims: { tenant: ['acme'] } }), { tenant: 'acme-evil' })).toBe('insufficient_claims');
    expect(outcome(policy({ claims: { email_verified: ['true'] } }), { email_verified: true })).toBe('allowed');
    expect(outcome(policy({ claims: { level: ['3'] } }), { level: 3 })).toBe('allowed');
    expect(outcome(policy({ claims: { tenant: ['acme'] } }), { tenant: { name: 'acme' } })).toBe('insufficient_claims');
  });

  it('refuses missing claims with 403 before it asks for a step-up', () => {
    expect(outcome(policy({ claims: { groups: ['admin'] }, acr: ['gold'] }), { groups: ['staff'] })).toBe('insufficient_claims');
  });

  it('asks for a step-up when auth_time is missing or older than maxAgeSeconds', () => {
    const p = policy({ maxAgeSeconds: 300 });
    expect(outcome(p, { auth_time: NOW / 1000 - 300 })).toBe('allowed');
    expect(outcome(p, { auth_time: NOW / 1000 - 301 })).toBe('step_up_required');
    expect(outcome(p, {})).toBe('step_up_required');
  });

  it('names both the acr values and max_age when both are unmet, and ignores a Referer from another origin', () => {
    try {
      policy({ acr: ['silver', 'gold'], maxAgeSeconds: 60 }).check(session({ acr: 'bronze', auth_time: 0 }), { referer: 'https://evil.example/x' });
      expect.unreachable();
    } catch (err) {
      expect((err as BrowserError).status).toBe(401);
      expect((err as BrowserError).toJSON()).toMatchObject({
        error: 'step_up_required',
        acr_values: 'silver gold',
        max_age: 60,
        login_url: '/auth/login?acr_values=silver+gold&max_age=60',
      });
    }
  });
});

describe('identity header values', () => {
  it('are claims as text: arrays comma-separated, non-ASCII percent-encoded, objects left out', () => {
    expect(identityValue('alice')).toBe('alice');
    expect(identityValue(['admin', 'staff'])).toBe('admin, staff');
    expect(identityValue('José\r\nX-Evil: 1')).toBe('Jos%C3%A9%0D%0AX-Evil%3A%201');
    expect(identityValue({ a: 1 })).toBeUndefined();
    expect(identityValue(undefined)).toBeUndefined();
  });

  it('sends a step-up to the login of its own app when apps share a host by path prefix', () => {
    const p = RoutePolicy.forRoute({ require: { acr: ['gold'] } } as RouteConfig, 'https://app.example.test', () => NOW, '/admin/auth/login');
    try {
      p!.check(session({ acr: 'silver' }), {});
      throw new Error('expected step_up_required');
    } catch (err) {
      expect((err as BrowserError & { details?: { login_url?: string } }).code).toBe('step_up_required');
      expect(JSON.stringify(err)).toContain('/admin/auth/login?acr_values=gold');
    }
  });
});
