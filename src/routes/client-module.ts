import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

/** Stable path of the browser helper: pages import it from here. */
export const CLIENT_MODULE_PATH = '/auth/client.js';

/**
 * The helper's source, found relative to the package root: `src/routes/` under vitest
 * and `dist/routes/` once built are both two levels below it.
 */
export const CLIENT_MODULE_FILE = new URL('../../client/token-handler-client.js', import.meta.url);

export interface ClientModuleOptions {
  /** Another copy of the helper (tests). Default: the package's `client/token-handler-client.js`. */
  file?: URL;
}

/**
 * Serves the browser helper (`client/token-handler-client.js`) at `/auth/client.js`.
 * The file is read once, when the plugin is registered. Its URL never changes between
 * versions, so browsers revalidate every time (`no-cache` + ETag: a 304 when unchanged).
 * A missing file is logged as an error and the path answers 404; it does not stop the
 * service.
 */
export async function clientModuleRoute(app: FastifyInstance, options: ClientModuleOptions = {}): Promise<void> {
  const file = options.file ?? CLIENT_MODULE_FILE;
  let source: Buffer;
  try {
    source = readFileSync(file);
  } catch (err) {
    app.log.error(
      { file: fileURLToPath(file), err: err instanceof Error ? err.message : String(err) },
      `browser helper not found: ${CLIENT_MODULE_PATH} answers 404 (ship the client/ folder next to dist/)`,
    );
    return;
  }
  const etag = `"${createHash('sha256').update(source).digest('base64url').slice(0, 32)}"`;

  app.get(CLIENT_MODULE_PATH, async (request, reply) => {
    reply
      .header('content-type', 'text/javascript; charset=utf-8')
      .header('cache-control', 'no-cache')
      .header('etag', etag)
      .header('x-content-type-options', 'nosniff');
    if (matchesEtag(request.headers['if-none-match'], etag)) return reply.code(304).send();
    return reply.send(source);
  });
}

/** `If-None-Match` (a list, possibly weak validators, or `*`) matched with weak comparison. */
function matchesEtag(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((candidate) => {
    const tag = candidate.trim();
    return tag === '*' || tag.replace(/^W\//, '') === etag;
  });
}
