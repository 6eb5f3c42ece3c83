import type { FastifyRequest } from 'fastify';
import type { CsrfConfig } from '../config/types.js';
import { csrfFailed } from '../errors.js';

export type RequestCheck = (request: FastifyRequest) => void;

/**
 * Where the browser says a call comes from (`Origin`, `Sec-Fetch-Site`), it must be our
 * own origin or an allowed one. Reading endpoints use this alone.
 */
export function createOriginCheck(config: CsrfConfig, publicOrigin: string): RequestCheck {
  const allowed = new Set([publicOrigin, ...config.allowedOrigins]);
  return (request) => {
    const origin = request.headers.origin;
    if (origin !== undefined) {
      if (!allowed.has(origin)) throw csrfFailed('Calls from this origin are not allowed.');
      return;
    }
    const site = request.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
      throw csrfFailed('Cross-site calls are not allowed.');
    }
  };
}

/**
 * The CSRF rule of docs/contracts.md "CSRF" for proxied calls and state-changing `/auth` calls: the
 * custom header (which forces a CORS preflight, so no other origin can send it without
 * our consent) must be present with the value `1`, and the origin check must pass.
 */
export function createCsrfCheck(config: CsrfConfig, publicOrigin: string): RequestCheck {
  const header = config.header;
  const originCheck = createOriginCheck(config, publicOrigin);
  return (request) => {
    if (request.headers[header] !== '1') {
      throw csrfFailed(`The ${header} header with the value 1 is required on this call.`);
    }
    originCheck(request);
  };
}

/**
 * The check of a WebSocket upgrade (docs/contracts.md "WebSockets"): a browser cannot send
 * the CSRF header on an upgrade, but always sends `Origin` there; it must be present and be
 * our own origin or an allowed one. A missing `Origin` is refused: no browser leaves it out.
 */
export function createUpgradeOriginCheck(config: CsrfConfig, publicOrigin: string): RequestCheck {
  const allowed = new Set([publicOrigin, ...config.allowedOrigins]);
  return (request) => {
    const origin = request.headers.origin;
    if (origin === undefined) throw csrfFailed('A WebSocket upgrade must carry the Origin header.');
    if (!allowed.has(origin)) throw csrfFailed('WebSocket upgrades from this origin are not allowed.');
  };
}
