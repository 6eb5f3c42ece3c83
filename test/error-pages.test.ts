/**
 * Pages for people: a page load that fails gets a small HTML page (what happened, a link
 * to start again) or, with errors.pagePath, the SPA's error page; a script's fetch of
 * the same thing still gets JSON.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvider, type TestProvider } from './support/provider.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';

let provider: TestProvider;
let bff: TestBff;
let withErrorPage: TestBff;

const PAGE_LOAD = { 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document', accept: 'text/html,*/*;q=0.8' };
const SCRIPT_FETCH = { 'sec-fetch-mode': 'cors', accept: '*/*' };

function start(extra: Record<string, unknown> = {}): Promise<TestBff> {
  return startBff({
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
    session: { secrets: [SECRET] },
    routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9' }],
    logging: { level: 'warn' },
    ...extra,
  });
}

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI] });
  bff = await start();
  withErrorPage = await start({ errors: { pagePath: '/error' } });
});

afterAll(async () => {
  await bff?.app.close();
  await withErrorPage?.app.close();
  await provider?.stop();
});

/** The href of the page's link whose text is `text`. */
const linkTo = (html: string, text: string) => new RegExp(`<a[^>]*href="([^"]*)"[^>]*>${text}</a>`).exec(html)?.[1];

describe('a page load that fails', () => {
  it('a sign-in response that cannot be completed shows a page that says so, with a link to sign in again', async () => {
    const response = await new TestBrowser(bff.app).request('/auth/callback?code=abc&state=not-ours', { headers: PAGE_LOAD, csrf: false });
    expect(response.statusCode).toBe(400);
    expect(response.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(response.body).toContain('<h1>Sign-in failed</h1>');
    expect(response.body).toContain('does not belong to a sign-in started here');
    expect(linkTo(response.body, 'Sign in again')).toBe('/auth/login');
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers['content-security-policy']).toMatch(/^default-src 'none'; style-src 'sha256-[^']+'; .*frame-ancestors 'none'$/);
  });

  it('the same failure fetched by a script is JSON', async () => {
    const response = await new TestBrowser(bff.app).request('/auth/callback?code=abc&state=not-ours', { headers: SCRIPT_FETCH, csrf: false });
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ error: 'bad_request' });
  });

  it("the provider's error text is shown as text, never as markup", async () => {
    const browser = new TestBrowser(bff.app);
    const state = new URL(await browser.startLogin()).searchParams.get('state')!;
    const hostile = '<img src=x onerror=alert(1)>';
    const query = new URLSearchParams({ error: hostile, state, iss: provider.issuer });
    const response = await browser.request(`/auth/callback?${query}`, { headers: PAGE_LOAD, csrf: false });
    expect(response.statusCode).toBe(400);
    expect(response.body).not.toContain('<img');
    expect(response.body).toContain('&#60;img src=x onerror=alert(1)&#62;');
  });

  it('opening /auth/user without a session shows a page with a link to sign in', async () => {
    const response = await new TestBrowser(bff.app).request('/auth/user', { headers: PAGE_LOAD, csrf: false });
    expect(response.statusCode).toBe(401);
    expect(response.body).toContain('<h1>You are not signed in</h1>');
    expect(linkTo(response.body, 'Sign in')).toBe('/auth/login');
  });

  it('opening an API address in the browser says it is for the application itself, with a link to the start page', async () => {
    const response = await new TestBrowser(bff.app).request('/api/orders', { headers: PAGE_LOAD, csrf: false });
    expect(response.statusCode).toBe(403);
    expect(response.body).toContain('<h1>This address is for the application itself</h1>');
    expect(linkTo(response.body, 'Go to the start page')).toBe('/');
  });

  it("with errors.pagePath, a failed page load is sent to the SPA's error page with the error code", async () => {
    const response = await new TestBrowser(withErrorPage.app).request('/auth/callback?code=abc&state=not-ours', { headers: PAGE_LOAD, csrf: false });
    expect(response.statusCode).toBe(303);
    expect(response.headers.location).toBe('/error?error=bad_request');
    expect(response.headers['cache-control']).toBe('no-store');
  });
});
