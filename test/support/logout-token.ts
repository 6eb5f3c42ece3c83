import { randomUUID } from 'node:crypto';
import { importJWK, SignJWT, type JWK } from 'jose';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import type { TestProvider } from './provider.js';

export const BACKCHANNEL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/**
 * A back-channel logout token as the provider would send it (signed with its own key, for
 * its BFF client), with `claims` added or replaced; a claim set to `undefined` is left out.
 */
export async function signLogoutToken(
  provider: TestProvider,
  claims: Record<string, unknown>,
  options: { jwk?: Record<string, unknown>; typ?: string } = {},
): Promise<string> {
  const jwk = (options.jwk ?? provider.state.signingJwk) as JWK;
  const key = await importJWK(jwk, String(jwk.alg ?? 'RS256'));
  const iat = Math.floor(Date.now() / 1000);
  const defaults = {
    iss: provider.issuer,
    aud: provider.clients.basic.clientId,
    iat,
    exp: iat + 120,
    jti: randomUUID(),
    events: { [BACKCHANNEL_EVENT]: {} },
  };
  const payload = Object.fromEntries(Object.entries({ ...defaults, ...claims }).filter(([, value]) => value !== undefined));
  return new SignJWT(payload)
    .setProtectedHeader({ alg: String(jwk.alg ?? 'RS256'), kid: String(jwk.kid), typ: options.typ ?? 'logout+jwt' })
    .sign(key);
}

/** Delivers a logout token to token-handler's back-channel logout endpoint. */
export function postLogoutToken(app: FastifyInstance, token: string): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: '/auth/backchannel-logout',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ logout_token: token }).toString(),
  });
}
