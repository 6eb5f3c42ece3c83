import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { BrowserError } from '../../src/errors.js';
import { sendError } from '../../src/failures.js';
import { useErrorPages } from '../../src/pages/error-page.js';

/** A page load (Accept: text/html) that fails with `code` on `path`, in an app served below `basePath`. */
async function failedPageLoad(basePath: string | undefined, path: string, code: 'login_required' | 'not_found'): Promise<string> {
  const app = Fastify();
  useErrorPages(app, { basePath });
  app.get(path, (_request, reply) => sendError(reply, new BrowserError(code, 'failed')));
  const response = await app.inject({ url: path, headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate' } });
  await app.close();
  expect(response.headers['content-type']).toContain('text/html');
  return response.body;
}

describe('the error page of an app served below a path prefix', () => {
  it('signs in at that app, not at the host root', async () => {
    const page = await failedPageLoad('/partners', '/partners/api/orders', 'login_required');
    expect(page).toContain('href="/partners/auth/login"');
    expect(page).toContain('href="/partners/"');
  });

  it('offers signing in again after a failed sign-in of that app', async () => {
    expect(await failedPageLoad('/partners', '/partners/auth/callback', 'not_found')).toContain('href="/partners/auth/login">Sign in again');
  });

  it('keeps the host root for an app without a prefix', async () => {
    const page = await failedPageLoad(undefined, '/api/orders', 'login_required');
    expect(page).toContain('href="/auth/login"');
  });
});
