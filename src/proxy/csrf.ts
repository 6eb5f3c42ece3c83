import type { FastifyRequest } from 'fastify';
import type { CsrfConfig } from '../config/types.js';
import { csrfFailed } from '../errors.js';

/**
 * The CSRF rule of DESIGN.md: the custom header (which forces a CORS preflight, so no
 * other origin can send it without our consent) must be present with the value `1`;
 * and where the browser says where the call comes from (`Origin`, `Sec-Fetch-Site`),
 * that must be our own origin or an allowed one.
 */
export function createCsrfCheck(config: CsrfConfig, publicOrigin: string): (request: FastifyRequest) => void {
  const allowed = new Set([publicOrigin, ...config.allowedOrigins]);
  const header = config.header;
  return (request) => {
    if (request.headers[header] !== '1') {
      throw csrfFailed(`The ${header} header with the value 1 is required on this call.`);
    }
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
