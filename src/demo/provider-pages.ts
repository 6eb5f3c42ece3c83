/**
 * The demo provider's pages (sign-in, consent, sign-out, errors) in the demo page's look,
 * instead of oidc-provider's development pages with their debug panels. Every value
 * shown is escaped; the pages carry no script.
 */

import { escapeHtml } from '../pages/html.js';

/** The demo page's palette and shapes (src/demo/public/demo.css), inline: the provider serves no files. */
const STYLE = `
:root{--bg:#f3f5fa;--card:#fff;--text:#1b2233;--muted:#5d6780;--line:#e3e7f0;--accent:#3451d1;--bad:#c0362c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif}
code{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:.9em}
.topbar{display:flex;align-items:center;justify-content:space-between;padding:14px 28px;background:#141b2d;color:#fff}
.brand{font-weight:600;font-size:1.05rem;display:flex;align-items:center;gap:8px}
.tag{font-size:.72rem;font-weight:500;background:#2e3a5c;color:#c8d2ff;border-radius:999px;padding:2px 8px}
.who{font-size:.92rem;color:#c8d2ff}
main{max-width:460px;margin:48px auto;padding:0 20px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:24px 26px;box-shadow:0 1px 3px rgba(20,30,60,.06)}
h1{font-size:1.3rem;margin:0 0 10px}
p{color:var(--muted);line-height:1.55;margin:0 0 14px}
label{display:block;font-size:.9rem;font-weight:500;margin:14px 0 6px}
input[type=text],input[type=password]{width:100%;font:inherit;padding:9px 11px;border:1px solid #c4cbe0;border-radius:8px}
input:focus{outline:2px solid var(--accent);outline-offset:1px}
ul{color:var(--muted);line-height:1.6;padding-left:20px;margin:0 0 14px}
.actions{display:flex;align-items:center;gap:14px;margin-top:20px}
.button{display:inline-block;font:inherit;font-size:.92rem;font-weight:500;text-decoration:none;border:1px solid var(--line);border-radius:8px;padding:8px 14px;background:#fff;color:var(--text);cursor:pointer}
.button.primary{background:var(--accent);border-color:var(--accent);color:#fff}
a{color:var(--accent)}
.note{font-size:.85rem}
footer{max-width:460px;margin:0 auto;padding:0 20px 28px;color:var(--muted);font-size:.82rem}`;

/** A page of the demo provider: the demo's top bar, one card. */
export function providerPage(title: string, body: string): string {
  return (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>${escapeHtml(title)} · demo OpenID provider</title><style>${STYLE}</style></head><body>` +
    '<header class="topbar"><div class="brand">token-handler <span class="tag">demo</span></div><div class="who">OpenID provider</div></header>' +
    `<main><section class="card">${body}</section></main>` +
    '<footer>The demo\'s embedded OpenID provider (oidc-provider) · development only: any user name and password sign in.</footer></body></html>'
  );
}

export interface InteractionView {
  uid: string;
  prompt: { name: string; details: { missingOIDCScope?: string[] } };
  params: { scope?: unknown; acr_values?: unknown };
  clientName: string;
}

/** What each scope the demo asks for lets the application see. */
const SCOPE_TEXT: Record<string, string> = {
  profile: 'your name',
  email: 'your e-mail address',
  offline_access: 'to stay signed in while you use it (a refresh token)',
};

/** The sign-in or consent page of an interaction; undefined for a prompt the demo does not show. */
export function interactionPage(view: InteractionView): string | undefined {
  const action = `/interaction/${encodeURIComponent(view.uid)}`;
  const cancel = `<a href="${action}/abort">Cancel</a>`;
  const client = `<strong>${escapeHtml(view.clientName)}</strong>`;
  if (view.prompt.name === 'login') {
    return providerPage(
      'Sign in',
      `<h1>Sign in</h1><p>${client} asks you to sign in. This demo provider accepts <strong>any user name and any password</strong>, for example <code>alice</code> / <code>secret</code>.</p>` +
        `<form method="post" action="${action}" autocomplete="off"><input type="hidden" name="prompt" value="login">` +
        '<label for="login">User name</label><input type="text" id="login" name="login" required autofocus>' +
        '<label for="password">Password</label><input type="password" id="password" name="password" required>' +
        `<div class="actions"><button class="button primary" type="submit">Sign in</button>${cancel}</div></form>`,
    );
  }
  if (view.prompt.name === 'consent') {
    const requested = typeof view.params.scope === 'string' ? view.params.scope.split(' ') : [];
    const items = requested.filter((scope) => SCOPE_TEXT[scope]).map((scope) => `<li>${escapeHtml(SCOPE_TEXT[scope])} <code>${escapeHtml(scope)}</code></li>`);
    return providerPage(
      'Allow access',
      `<h1>Allow ${client}?</h1><p>It asks for:</p><ul>${items.join('') || '<li>your user name only</li>'}</ul>` +
        `<form method="post" action="${action}"><input type="hidden" name="prompt" value="consent">` +
        `<div class="actions"><button class="button primary" type="submit" autofocus>Allow and continue</button>${cancel}</div></form>`,
    );
  }
  return undefined;
}

/** oidc-provider's error page: what went wrong in words, and the way back to the demo. */
export function providerErrorPage(out: Record<string, unknown>, demoUrl: string): string {
  const text = typeof out.error_description === 'string' && out.error_description !== '' ? out.error_description : 'the request could not be handled';
  const description = text.charAt(0).toUpperCase() + text.slice(1);
  return providerPage(
    'Something went wrong',
    `<h1>Something went wrong</h1><p>${escapeHtml(description.replace(/\.?$/, '.'))}</p>` +
      `<p class="note">Error <code>${escapeHtml(out.error ?? 'server_error')}</code></p>` +
      `<div class="actions"><a class="button primary" href="${escapeHtml(demoUrl)}">Back to the demo</a></div>`,
  );
}

/** RP-initiated logout: oidc-provider's hidden form, confirmed or declined here. */
export function logoutPage(host: string, form: string): string {
  return providerPage(
    'Sign out',
    `<h1>Sign out of the demo provider too?</h1><p>token-handler has ended your session. You are still signed in at <strong>${escapeHtml(host)}</strong>, the demo's OpenID provider.</p>${form}` +
      '<div class="actions"><button class="button primary" autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>' +
      '<button class="button" type="submit" form="op.logoutForm">No, stay signed in</button></div>',
  );
}

export function signedOutPage(demoUrl: string): string {
  return providerPage(
    'Signed out',
    `<h1>Signed out</h1><p>You have been signed out of the demo provider.</p><div class="actions"><a class="button primary" href="${escapeHtml(demoUrl)}">Back to the demo</a></div>`,
  );
}
