import { TokenHandlerError } from '../errors.js';
import { errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';

const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const LOGOUT_TYPES = new Set(['logout+jwt', 'application/logout+jwt']);

/** What a valid logout token asks for: end the sessions of `sid`, or all of `sub`'s when only `sub` is given. */
export interface LogoutTokenClaims {
  sid?: string;
  sub?: string;
  jti: string;
  /** Epoch seconds. */
  iat: number;
}

/** The logout token is not acceptable (answer 400); the message says which rule it broke. */
export class LogoutTokenError extends TokenHandlerError {
  readonly code = 'ERR_TH_LOGOUT_TOKEN';
}

export interface LogoutTokenChecks {
  issuer: string;
  clientId: string;
  keys: JWTVerifyGetKey;
  /** Epoch milliseconds. */
  now: number;
  /** How old (by `iat`) a logout token may be. */
  maxAgeSeconds: number;
}

/** Validates a logout token as OIDC Back-Channel Logout 1.0 §2.6 requires. */
export async function validateLogoutToken(token: string, checks: LogoutTokenChecks): Promise<LogoutTokenClaims> {
  let verified;
  try {
    verified = await jwtVerify(token, checks.keys, {
      issuer: checks.issuer,
      audience: checks.clientId,
      currentDate: new Date(checks.now),
      maxTokenAge: checks.maxAgeSeconds,
      // Back-Channel Logout 1.0 §2.4: iat, exp and jti are REQUIRED.
      requiredClaims: ['iat', 'exp', 'jti'],
      clockTolerance: 30,
    });
  } catch (err) {
    if (err instanceof joseErrors.JOSEError && !(err instanceof joseErrors.JWKSTimeout)) {
      throw new LogoutTokenError(`logout token rejected: ${err.code}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  const { payload, protectedHeader } = verified;
  if (protectedHeader.typ !== undefined && !LOGOUT_TYPES.has(protectedHeader.typ.toLowerCase())) {
    throw new LogoutTokenError(`logout token has typ "${protectedHeader.typ}", expected logout+jwt`);
  }
  const events = payload.events as Record<string, unknown> | undefined;
  const event = events && typeof events === 'object' ? events[BACKCHANNEL_LOGOUT_EVENT] : undefined;
  if (typeof event !== 'object' || event === null) {
    throw new LogoutTokenError('logout token lacks the back-channel logout event');
  }
  if ('nonce' in payload) throw new LogoutTokenError('logout token must not carry a nonce');
  if (typeof payload.jti !== 'string' || payload.jti === '') throw new LogoutTokenError('logout token lacks jti');
  if (typeof payload.iat !== 'number') throw new LogoutTokenError('logout token lacks iat');
  const sid = typeof payload.sid === 'string' && payload.sid !== '' ? payload.sid : undefined;
  const sub = typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : undefined;
  if (!sid && !sub) throw new LogoutTokenError('logout token names neither sid nor sub');
  return { jti: payload.jti, iat: payload.iat, ...(sid ? { sid } : {}), ...(sub ? { sub } : {}) };
}
