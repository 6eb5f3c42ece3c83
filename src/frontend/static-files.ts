import { relative, sep } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fastifyCompress from '@fastify/compress';
import fastifyStatic from '@fastify/static';

/** Cached for a year and never revalidated: a new build gives such a file a new name. */
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Revalidated on every use (cheap: an ETag answered with 304), so a deploy shows at once. */
const REVALIDATE = 'no-cache';
const INDEX = 'index.html';

/**
 * Files whose name changes with their content: everything under assets/ (Vite's
 * build.assetsDir) and names with a hex content hash such as main.3f2a9c1b.js (webpack's
 * [contenthash]).
 */
export function isHashedAsset(relativePath: string): boolean {
  return relativePath.startsWith('assets/') || /\.[0-9a-f]{8,}\.[A-Za-z0-9]+$/.test(relativePath);
}

/**
 * The SPA's production build, compressed, with its caching: hashed assets for a year,
 * index.html and every other file revalidated. Registers GET/HEAD /* in `scope`; a path
 * with no file goes to the not-found handler (`serveIndex` for page loads).
 */
export async function staticFiles(scope: FastifyInstance, root: string): Promise<void> {
  // Before the files' route: compression hooks onto the routes registered after it.
  await scope.register(fastifyCompress, { global: true });
  await scope.register(fastifyStatic, {
    root,
    wildcard: true,
    index: [INDEX],
    // Cache-Control is setHeaders' to say, per file.
    cacheControl: false,
    // A .env or .git left in the build directory is never served.
    dotfiles: 'ignore',
    setHeaders: (reply, path) => {
      const file = relative(root, path).split(sep).join('/');
      reply.header('cache-control', file.endsWith('.html') || !isHashedAsset(file) ? REVALIDATE : IMMUTABLE);
    },
  });
}

/** The SPA's index.html for a page load of a client-side route (a path with no file). */
export function serveIndex(request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined {
  if ((request.method !== 'GET' && request.method !== 'HEAD') || typeof reply.sendFile !== 'function') return undefined;
  return reply.code(200).sendFile(INDEX);
}
