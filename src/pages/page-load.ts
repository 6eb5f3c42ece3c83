import type { FastifyRequest } from 'fastify';

/**
 * Whether a request is a person's page load (a link followed, an address typed, a form
 * posted) rather than a script's call: browsers say so in Sec-Fetch-Mode; without it
 * (older browsers, other clients) an Accept that names HTML before JSON decides.
 */
export function isPageLoad(request: FastifyRequest): boolean {
  const mode = request.headers['sec-fetch-mode'];
  if (typeof mode === 'string') return mode === 'navigate';
  const accept = request.headers.accept;
  if (typeof accept !== 'string') return false;
  const html = accept.indexOf('text/html');
  const json = accept.indexOf('application/json');
  return html !== -1 && (json === -1 || html < json);
}
