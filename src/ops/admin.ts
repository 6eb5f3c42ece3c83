import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';

/** Which sessions an operator ends: every one of a user (`sub`) or of a provider session (`sid`). */
export type AdminMatch = { sub: string } | { sid: string };

export interface AdminOptions {
  /** `admin.token`; without it every call is refused. */
  token: string | undefined;
  /**
   * Ends the matching sessions everywhere, of the app named `app` or of every app;
   * `ended` is null where a store cannot count (cookie store).
   */
  revoke(match: AdminMatch, log: FastifyBaseLogger, app: string | undefined): Promise<{ ended: number | null }>;
  /** The apps' names: a call may name one (`"app"`). */
  apps: readonly string[];
  logger: FastifyBaseLogger;
}

const MAX_BODY_BYTES = 4096;

/**
 * The operator endpoints of the metrics listener — `POST /admin/sessions/revoke` — as a
 * handler of that plain HTTP server: true when it answered the request.
 */
export function adminHandler(options: AdminOptions): (request: IncomingMessage, response: ServerResponse) => boolean {
  const expected = options.token === undefined ? undefined : digest(options.token);
  return (request, response) => {
    if (request.url?.split('?')[0] !== '/admin/sessions/revoke') return false;
    if (request.method !== 'POST') {
      answer(response, 405, { error: 'method_not_allowed', error_description: 'POST only.' }, { allow: 'POST' });
      return true;
    }
    if (!authorized(request.headers.authorization, expected)) {
      options.logger.warn({ address: request.socket.remoteAddress }, 'admin call refused: missing or wrong bearer token');
      answer(response, 401, { error: 'invalid_token', error_description: 'This endpoint needs Authorization: Bearer <admin.token>.' }, { 'www-authenticate': 'Bearer' });
      return true;
    }
    readJson(request).then(
      async (body) => {
        const match = matchOf(body);
        if (!match) {
          answer(response, 400, { error: 'bad_request', error_description: 'Expected JSON { "sub": "..." } or { "sid": "..." }, and optionally "app".' });
          return;
        }
        const app = (body as { app?: unknown }).app;
        if (app !== undefined && (typeof app !== 'string' || !options.apps.includes(app))) {
          answer(response, 400, { error: 'bad_request', error_description: `"app" names no app; expected one of ${options.apps.join(', ')}, or no "app" for every app.` });
          return;
        }
        options.logger.warn({ address: request.socket.remoteAddress, ...match, ...(app === undefined ? {} : { app }) }, 'admin: ending sessions');
        const { ended } = await options.revoke(match, options.logger, app);
        answer(response, 200, { ended });
      },
      () => answer(response, 400, { error: 'bad_request', error_description: `Expected a JSON body of at most ${MAX_BODY_BYTES} bytes.` }),
    ).catch((err: unknown) => {
      options.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'admin: ending sessions failed');
      answer(response, 503, { error: 'session_store_unavailable', error_description: 'The sessions could not be ended right now; try again.' });
    });
    return true;
  };
}

/** Compared as digests of equal length, in constant time. */
function authorized(header: string | undefined, expected: Buffer | undefined): boolean {
  if (expected === undefined || header === undefined || !header.startsWith('Bearer ')) return false;
  return timingSafeEqual(digest(header.slice('Bearer '.length)), expected);
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function matchOf(body: unknown): AdminMatch | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const { sub, sid, app: _app, ...rest } = body as Record<string, unknown>;
  if (Object.keys(rest).length > 0) return undefined;
  if (typeof sub === 'string' && sub !== '' && sid === undefined) return { sub };
  if (typeof sid === 'string' && sid !== '' && sub === undefined) return { sid };
  return undefined;
}

function readJson(request: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('body too large'));
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(err);
      }
    });
    request.on('error', reject);
  });
}

function answer(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (response.headersSent) return;
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers }).end(JSON.stringify(body));
}
