import type { FastifyReply } from 'fastify';

/**
 * Only the SPA's own origin may provide code, styles and connections; inline styles are
 * allowed because most SPA frameworks set some at run time; nobody may frame it.
 */
export const DEFAULT_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "img-src 'self' data:",
  "style-src 'self' 'unsafe-inline'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * The headers every answer of the frontend route carries, unless the answer set its own
 * (a dev server's, an error page's): no MIME sniffing, no full URL in the Referer sent
 * to other sites, no framing (X-Frame-Options for browsers that ignore frame-ancestors).
 */
export function addSecurityHeaders(reply: FastifyReply, contentSecurityPolicy: string): void {
  const missing = (name: string) => !reply.hasHeader(name);
  if (missing('x-content-type-options')) reply.header('x-content-type-options', 'nosniff');
  if (missing('referrer-policy')) reply.header('referrer-policy', 'same-origin');
  if (missing('x-frame-options')) reply.header('x-frame-options', 'DENY');
  if (contentSecurityPolicy !== '' && missing('content-security-policy')) reply.header('content-security-policy', contentSecurityPolicy);
}
