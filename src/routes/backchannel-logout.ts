import type { FastifyInstance } from 'fastify';
import { badRequest } from '../errors.js';
import { answerProviderFailure } from '../failures.js';
import { LogoutTokenError } from '../oidc/logout-token.js';
import { ProviderError } from '../oidc/errors.js';
import type { OidcProvider } from '../oidc/provider.js';
import type { SessionManager } from '../session/manager.js';
import type { SeenOnce } from '../state/ports.js';

export interface BackchannelLogoutOptions {
  provider: Pick<OidcProvider, 'validateLogoutToken'>;
  sessions: SessionManager;
  seenOnce: SeenOnce;
  retryAfterSeconds: number;
}

/** How long a logout token's `jti` is remembered: longer than a token may be old (5 min) plus skew. */
const JTI_MEMORY_MS = 10 * 60_000;

/**
 * `POST /auth/backchannel-logout` (OIDC Back-Channel Logout 1.0): the provider tells us
 * a user's session ended there. Protected by the logout token's signature, not by CSRF.
 */
export async function backchannelLogoutRoute(app: FastifyInstance, options: BackchannelLogoutOptions): Promise<void> {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_request, body, done) => {
    done(null, new URLSearchParams(body as string));
  });

  app.post('/auth/backchannel-logout', async (request, reply) => {
    const form = request.body instanceof URLSearchParams ? request.body : undefined;
    const tokens = form?.getAll('logout_token') ?? [];
    if (tokens.length !== 1 || !tokens[0]) throw badRequest('Expected one logout_token (application/x-www-form-urlencoded).');

    let claims;
    try {
      claims = await options.provider.validateLogoutToken(tokens[0]);
    } catch (err) {
      if (err instanceof LogoutTokenError) {
        request.log.warn({ err: err.message }, 'back-channel logout refused');
        throw badRequest(err.message);
      }
      if (err instanceof ProviderError) throw answerProviderFailure(err, 'logout token keys', request.log, options.retryAfterSeconds);
      throw err;
    }
    if (!(await options.seenOnce.firstTime(`jti:${claims.jti}`, JTI_MEMORY_MS))) {
      request.log.warn('back-channel logout refused: logout token replayed');
      throw badRequest('logout token already used (jti replayed)');
    }
    await options.sessions.endProviderSessions(claims.sid ? { sid: claims.sid } : { sub: claims.sub! }, request.log);
    return reply.code(200).header('cache-control', 'no-store').send();
  });
}
