import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';

/**
 * The demo page's files, found relative to the package root so that the same path
 * works from `src/demo/` (vitest) and from `dist/demo/` (npm start).
 */
const PUBLIC_DIR = new URL('../../src/demo/public/', import.meta.url);

const ASSETS = [
  { path: '/', file: 'index.html', type: 'text/html; charset=utf-8' },
  { path: '/demo.js', file: 'demo.js', type: 'text/javascript; charset=utf-8' },
  { path: '/demo.css', file: 'demo.css', type: 'text/css; charset=utf-8' },
  { path: '/favicon.svg', file: 'favicon.svg', type: 'image/svg+xml' },
] as const;

/** Only our own files and calls; no inline code; never framed. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * The demo page at `/` (plus its script, style and icon), registered with
 * `buildApp(config, { plugins: [...] })`. Browsing to another host name than the
 * public URL's (e.g. localhost instead of 127.0.0.1) is sent to the public URL, since
 * the session cookie and the CSRF origin check belong to that origin.
 */
export function demoPagePlugin(publicUrl: string, accessTokenSeconds: number): FastifyPluginAsync {
  const publicHost = new URL(publicUrl).host;
  // The page states the provider's token life before anyone signs in, the same number the banner prints.
  const fill = (file: string, body: Buffer) => (file === 'index.html' ? Buffer.from(body.toString('utf8').replace('{{accessTokenSeconds}}', String(accessTokenSeconds))) : body);
  const files = ASSETS.map((asset) => ({ ...asset, body: fill(asset.file, readFileSync(new URL(asset.file, PUBLIC_DIR))) }));

  return async (app: FastifyInstance) => {
    for (const asset of files) {
      app.get(asset.path, async (request, reply) => {
        if (request.headers.host !== publicHost) return reply.redirect(`${publicUrl}${request.url}`, 302);
        reply
          .header('content-type', asset.type)
          .header('cache-control', 'no-cache')
          .header('x-content-type-options', 'nosniff')
          .header('referrer-policy', 'same-origin');
        if (asset.file === 'index.html') reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
        return reply.send(asset.body);
      });
    }
  };
}
