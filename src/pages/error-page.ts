/**
 * What a person sees when their page load fails: a small HTML page of token-handler's
 * own (what happened and a link to start again), or a redirect to the SPA's error page
 * (`errors.pagePath`) with `error=<code>`. Only `sendError` (failures.ts) calls this.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { BrowserError, BrowserErrorCode } from '../errors.js';
import { escapeHtml } from './html.js';

export interface ErrorPageSettings {
  /** The SPA's error page (errors.pagePath); unset: token-handler's own HTML page. */
  pagePath?: string | undefined;
  /** The app's path prefix when apps share a host by prefix: its sign-in and start page are below it. */
  basePath?: string | undefined;
}

const kErrorPages = Symbol('token-handler error pages');

/** Makes `settings` what the error answers of `app` (and the contexts below it) use. */
export function useErrorPages(app: FastifyInstance, settings: ErrorPageSettings): void {
  app.decorate(kErrorPages, settings);
}

function settingsOf(reply: FastifyReply): ErrorPageSettings {
  return ((reply.server as unknown as Record<symbol, ErrorPageSettings | undefined>)[kErrorPages]) ?? {};
}

const HEADINGS: Partial<Record<BrowserErrorCode, string>> = {
  login_required: 'You are not signed in',
  not_found: 'There is nothing here',
  idp_unavailable: 'The sign-in service cannot be reached',
  session_store_unavailable: 'Sessions are unavailable for a moment',
  too_many_requests: 'Too many attempts',
  csrf_failed: 'This address is for the application itself',
};

const SIGN_IN_PATHS = ['/auth/login', '/auth/callback'];
const isSignInPath = (path: string, base: string) => SIGN_IN_PATHS.some((signIn) => path === `${base}${signIn}`);

const STYLE =
  'body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#f3f5fa;color:#1b2233;' +
  'font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}' +
  'main{background:#fff;border:1px solid #e3e7f0;border-radius:12px;box-shadow:0 1px 3px rgba(20,30,60,.06);padding:28px 32px;max-width:480px;margin:20px}' +
  'h1{font-size:1.3rem;margin:0 0 10px}p{line-height:1.55;color:#5d6780}' +
  'a.button{display:inline-block;background:#3451d1;color:#fff;text-decoration:none;border-radius:8px;padding:9px 16px;margin-right:14px;font-weight:500}' +
  'a{color:#3451d1}.ref{font-size:.8rem;margin-top:22px}code{font-family:ui-monospace,Menlo,Consolas,monospace}';

/** The page's only style is inline, allowed by its hash; nothing else may load or run. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `style-src 'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`,
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Where "start again" leads: signing in, when that is what failed or is missing; otherwise the start page. */
function startAgain(path: string, error: BrowserError, base: string): { href: string; text: string } {
  if (isSignInPath(path, base)) return { href: `${base}/auth/login`, text: 'Sign in again' };
  if (error.code === 'login_required') return { href: `${base}/auth/login`, text: 'Sign in' };
  return { href: `${base}/`, text: 'Go to the start page' };
}

/** Answers a failed page load; the caller has set the status and the headers every error answer has. */
export function sendErrorPage(reply: FastifyReply, error: BrowserError): FastifyReply {
  const { pagePath, basePath = '' } = settingsOf(reply);
  if (pagePath !== undefined) {
    // 303: the browser follows with a GET, also after a form post.
    return reply.redirect(`${pagePath}${pagePath.includes('?') ? '&' : '?'}error=${encodeURIComponent(error.code)}`, 303);
  }
  const path = reply.request.url.split('?', 1)[0]!;
  const heading = HEADINGS[error.code] ?? (isSignInPath(path, basePath) ? 'Sign-in failed' : 'Something went wrong');
  const link = startAgain(path, error, basePath);
  const home = link.href === `${basePath}/` ? '' : `<a href="${escapeHtml(basePath)}/">Start page</a>`;
  const body =
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(heading)}</title><style>${STYLE}</style></head><body><main>` +
    `<h1>${escapeHtml(heading)}</h1><p>${escapeHtml(error.description)}</p>` +
    `<p><a class="button" href="${escapeHtml(link.href)}">${escapeHtml(link.text)}</a>${home}</p>` +
    `<p class="ref">Error <code>${escapeHtml(error.code)}</code> · reference <code>${escapeHtml(String(reply.request.id))}</code></p>` +
    `</main></body></html>`;
  return reply
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-frame-options', 'DENY')
    .header('referrer-policy', 'no-referrer')
    .type('text/html; charset=utf-8')
    .send(body);
}
