/**
 * A minimal HTTP "browser": a cookie jar, fetch with cookies and manual redirects, and drivers for
 * oidc-provider's devInteractions login/consent pages and its RP-initiated logout page.
 */

export interface Cookie {
  name: string;
  value: string;
  path: string;
  /** epoch ms; undefined = session cookie */
  expiresAt?: number;
  secure: boolean;
  httpOnly: boolean;
  sameSite?: string;
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

function defaultPath(pathname: string): string {
  if (!pathname.startsWith('/')) return '/';
  const last = pathname.lastIndexOf('/');
  return last <= 0 ? '/' : pathname.slice(0, last);
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath.charAt(cookiePath.length) === '/';
}

/**
 * Cookie store keyed by ORIGIN (scheme://host:port), unlike real browsers, which share cookies
 * between ports of one host: the provider, the BFF and the upstream all run on 127.0.0.1, and
 * keeping them apart avoids cross-talk between their cookies. Honours Path, Max-Age and Expires
 * (Max-Age<=0 or a past Expires deletes), ignores Domain (cookies are host-only). `Secure` cookies
 * are accepted and sent on https and on loopback http origins (as browsers treat localhost).
 */
export class CookieJar {
  private readonly byOrigin = new Map<string, Map<string, Cookie>>();

  private bucket(url: URL, create: true): Map<string, Cookie>;
  private bucket(url: URL, create?: false): Map<string, Cookie> | undefined;
  private bucket(url: URL, create = false): Map<string, Cookie> | undefined {
    let bucket = this.byOrigin.get(url.origin);
    if (!bucket && create) this.byOrigin.set(url.origin, (bucket = new Map()));
    return bucket;
  }

  /** Store one Set-Cookie header value received from `url`. */
  setCookie(url: string | URL, setCookie: string): void {
    const target = new URL(url);
    const [pair = '', ...attributes] = setCookie.split(';');
    const eq = pair.indexOf('=');
    if (eq < 0) return;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (!name) return;

    const cookie: Cookie = { name, value, path: defaultPath(target.pathname), secure: false, httpOnly: false };
    let maxAge: number | undefined;
    let expires: number | undefined;
    for (const attribute of attributes) {
      const aeq = attribute.indexOf('=');
      const key = (aeq < 0 ? attribute : attribute.slice(0, aeq)).trim().toLowerCase();
      const val = aeq < 0 ? '' : attribute.slice(aeq + 1).trim();
      switch (key) {
        case 'path':
          if (val.startsWith('/')) cookie.path = val;
          break;
        case 'max-age':
          if (/^-?\d+$/.test(val)) maxAge = Number(val);
          break;
        case 'expires': {
          const parsed = Date.parse(val);
          if (!Number.isNaN(parsed)) expires = parsed;
          break;
        }
        case 'secure':
          cookie.secure = true;
          break;
        case 'httponly':
          cookie.httpOnly = true;
          break;
        case 'samesite':
          cookie.sameSite = val;
          break;
        default:
          break;
      }
    }
    if (maxAge !== undefined) cookie.expiresAt = maxAge <= 0 ? 0 : Date.now() + maxAge * 1000;
    else if (expires !== undefined) cookie.expiresAt = expires;

    const key = `${cookie.path}\n${name}`;
    if (cookie.expiresAt !== undefined && cookie.expiresAt <= Date.now()) {
      this.bucket(target)?.delete(key);
      return;
    }
    this.bucket(target, true).set(key, cookie);
  }

  /** Store every Set-Cookie header of a response received from `url`. */
  storeFrom(url: string | URL, response: Response | Headers): void {
    const headers = response instanceof Headers ? response : response.headers;
    for (const header of headers.getSetCookie()) this.setCookie(url, header);
  }

  /** Live cookies that a request to `url` would carry (longest path first). */
  cookiesFor(url: string | URL): Cookie[] {
    const target = new URL(url);
    const bucket = this.bucket(target);
    if (!bucket) return [];
    const secureOk = target.protocol === 'https:' || LOOPBACK_HOSTS.has(target.hostname);
    const now = Date.now();
    const out: Cookie[] = [];
    for (const [key, cookie] of bucket) {
      if (cookie.expiresAt !== undefined && cookie.expiresAt <= now) {
        bucket.delete(key);
        continue;
      }
      if (cookie.secure && !secureOk) continue;
      if (!pathMatches(target.pathname, cookie.path)) continue;
      out.push(cookie);
    }
    return out.sort((a, b) => b.path.length - a.path.length);
  }

  /** The Cookie header value for `url`, or undefined when no cookie applies. */
  cookieHeader(url: string | URL): string | undefined {
    const cookies = this.cookiesFor(url);
    return cookies.length ? cookies.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }

  /** Value of the cookie `name` that would be sent to `url`. */
  get(url: string | URL, name: string): string | undefined {
    return this.cookiesFor(url).find((c) => c.name === name)?.value;
  }

  /** Every live cookie stored for the origin of `url`, regardless of path. */
  all(url: string | URL): Cookie[] {
    const bucket = this.bucket(new URL(url));
    const now = Date.now();
    return [...(bucket?.values() ?? [])].filter((c) => c.expiresAt === undefined || c.expiresAt > now);
  }

  /** Delete the cookie `name` (all paths) of the origin of `url`. */
  delete(url: string | URL, name: string): void {
    const bucket = this.bucket(new URL(url));
    if (!bucket) return;
    for (const [key, cookie] of bucket) if (cookie.name === name) bucket.delete(key);
  }

  clear(): void {
    this.byOrigin.clear();
  }
}

/**
 * `fetch` like a browser tab: sends the jar's cookies, stores Set-Cookie, never follows redirects
 * (`redirect: 'manual'`, the 3xx response with its Location is returned).
 */
export async function browserFetch(jar: CookieJar, url: string | URL, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const cookie = jar.cookieHeader(url);
  if (cookie) {
    const existing = headers.get('cookie');
    headers.set('cookie', existing ? `${existing}; ${cookie}` : cookie);
  }
  const response = await fetch(url, { ...init, headers, redirect: 'manual' });
  jar.storeFrom(url, response);
  return response;
}

export const isRedirect = (status: number) => status >= 300 && status < 400 && status !== 304;

// ---------------------------------------------------------------------------------------------
// Tiny HTML form scraping (enough for oidc-provider's own pages)
// ---------------------------------------------------------------------------------------------
export function decodeHtmlEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_m, entity: string) => {
    const e = entity.toLowerCase();
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[e] ?? _m;
  });
}

function parseAttributes(source: string): Record<string, string> {
  const attributes: Record<string, string> = {};
  const re = /([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?/g;
  for (const m of source.matchAll(re)) {
    const name = m[1]!.toLowerCase();
    attributes[name] = decodeHtmlEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attributes;
}

export interface HtmlForm {
  id?: string;
  action: string;
  method: string;
  /** name → value of the form's <input>s that have a name (hidden ones and those with a value). */
  fields: Record<string, string>;
  /** names of all named inputs, including empty text/password inputs */
  inputNames: string[];
}

export function parseForms(html: string): HtmlForm[] {
  const forms: HtmlForm[] = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attributes = parseAttributes(m[1] ?? '');
    const fields: Record<string, string> = {};
    const inputNames: string[] = [];
    for (const input of (m[2] ?? '').matchAll(/<input\b([^>]*?)\/?>/gi)) {
      const a = parseAttributes(input[1] ?? '');
      if (!a.name) continue;
      inputNames.push(a.name);
      if (a.value !== undefined) fields[a.name] = a.value;
    }
    const form: HtmlForm = {
      action: attributes.action ?? '',
      method: (attributes.method ?? 'get').toUpperCase(),
      fields,
      inputNames,
    };
    if (attributes.id !== undefined) form.id = attributes.id;
    forms.push(form);
  }
  return forms;
}

function linkWithText(html: string, text: string): string | undefined {
  for (const m of html.matchAll(/<a\b([^>]*)>([\s\S]*?)<\/a>/gi)) {
    if ((m[2] ?? '').includes(text)) return parseAttributes(m[1] ?? '').href;
  }
  return undefined;
}

function describeErrorPage(html: string): string {
  const pres = [...html.matchAll(/<pre\b[^>]*>([\s\S]*?)<\/pre>/gi)].map((m) =>
    decodeHtmlEntities((m[1] ?? '').replace(/<[^>]+>/g, '')).trim(),
  );
  if (pres.length) return pres.join('; ');
  return html.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 500);
}

export class ProviderPageError extends Error {
  constructor(
    message: string,
    readonly url: string,
    readonly status: number,
    readonly html: string,
  ) {
    super(message);
    this.name = 'ProviderPageError';
  }
}

const withoutQuery = (url: string) => {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
};

async function submitForm(jar: CookieJar, pageUrl: string, form: HtmlForm, fields: Record<string, string>): Promise<Response> {
  const action = new URL(form.action || pageUrl, pageUrl).href;
  if (form.method === 'GET') {
    const target = new URL(action);
    for (const [k, v] of Object.entries(fields)) target.searchParams.set(k, v);
    return browserFetch(jar, target);
  }
  return browserFetch(jar, action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: new URL(pageUrl).origin },
    body: new URLSearchParams(fields).toString(),
  });
}

export interface ProviderLoginOptions {
  /** Account id to log in as (devInteractions accept any). Default 'alice'. */
  login?: string;
  /** Default 'password' (ignored by devInteractions). */
  password?: string;
  /** false: cancel at the consent prompt (the provider then redirects with error=access_denied). Default true. */
  consent?: boolean;
  /** Share cookies with other calls (e.g. keep the provider session for SSO / logout). Default: a fresh jar. */
  jar?: CookieJar;
  /** Safety limit on requests. Default 25. */
  maxSteps?: number;
}

/**
 * Drives the provider from `authorizationUrl` like a browser: follows redirects within the provider,
 * fills in the devInteractions login form and approves the consent form, and returns the first
 * redirect leaving the provider (the client's redirect_uri with `code`, `state`, `iss`, or with
 * `error`) WITHOUT requesting it. Throws ProviderPageError when the provider shows an error page.
 */
export async function completeProviderLogin(authorizationUrl: string, opts: ProviderLoginOptions = {}): Promise<string> {
  const jar = opts.jar ?? new CookieJar();
  const providerOrigin = new URL(authorizationUrl).origin;
  const redirectUri = new URL(authorizationUrl).searchParams.get('redirect_uri');
  const leavesProvider = (location: string) =>
    new URL(location).origin !== providerOrigin || (redirectUri !== null && withoutQuery(location) === withoutQuery(redirectUri));

  let url = authorizationUrl;
  let response = await browserFetch(jar, url);
  for (let step = 0; step < (opts.maxSteps ?? 25); step++) {
    if (isRedirect(response.status)) {
      const locationHeader = response.headers.get('location');
      await response.arrayBuffer();
      if (!locationHeader) throw new ProviderPageError(`redirect without Location at ${url}`, url, response.status, '');
      const location = new URL(locationHeader, url).href;
      if (leavesProvider(location)) return location;
      url = location;
      response = await browserFetch(jar, url);
      continue;
    }

    const html = await response.text();
    if (response.status !== 200) {
      throw new ProviderPageError(`provider answered ${response.status} at ${url}: ${describeErrorPage(html)}`, url, response.status, html);
    }
    const forms = parseForms(html);
    const autoSubmit = forms[0];
    if (autoSubmit && forms.every((f) => f.fields.prompt === undefined) && html.includes('document.forms[0].submit()')) {
      // A page that posts itself on load (oidc-provider's, when another account signs in over an existing session).
      response = await submitForm(jar, url, autoSubmit, { ...autoSubmit.fields });
      url = new URL(autoSubmit.action || url, url).href;
      continue;
    }
    const form = forms.find((f) => f.fields.prompt !== undefined);
    if (!form) {
      throw new ProviderPageError(`no login/consent form at ${url}: ${describeErrorPage(html)}`, url, response.status, html);
    }
    const prompt = form.fields.prompt;
    if (prompt === 'login') {
      response = await submitForm(jar, url, form, {
        ...form.fields,
        login: opts.login ?? 'alice',
        password: opts.password ?? 'password',
      });
    } else if (prompt === 'consent') {
      if (opts.consent === false) {
        const abort = linkWithText(html, 'Cancel');
        if (!abort) throw new ProviderPageError(`no cancel link at ${url}`, url, response.status, html);
        url = new URL(abort, url).href;
        response = await browserFetch(jar, url);
        continue;
      }
      response = await submitForm(jar, url, form, { ...form.fields });
    } else {
      throw new ProviderPageError(`unsupported prompt "${prompt}" at ${url}`, url, response.status, html);
    }
    url = new URL(form.action || url, url).href;
  }
  throw new Error(`completeProviderLogin: gave up after ${opts.maxSteps ?? 25} steps (last URL ${url})`);
}

export interface ProviderLogoutOptions {
  /** The jar used for login (it holds the provider session cookie). Default: a fresh jar. */
  jar?: CookieJar;
  /** false: press "No, stay signed in". Default true. */
  confirm?: boolean;
  maxSteps?: number;
}

/**
 * Drives oidc-provider's RP-initiated logout from an end_session URL: confirms the logout form and
 * returns the first redirect leaving the provider (the post_logout_redirect_uri, with `state`), or,
 * when the provider ends on its own "Sign-out Success" page, that page's URL.
 */
export async function completeProviderLogout(endSessionUrl: string, opts: ProviderLogoutOptions = {}): Promise<string> {
  const jar = opts.jar ?? new CookieJar();
  const providerOrigin = new URL(endSessionUrl).origin;
  let url = endSessionUrl;
  let response = await browserFetch(jar, url);
  for (let step = 0; step < (opts.maxSteps ?? 10); step++) {
    if (isRedirect(response.status)) {
      const locationHeader = response.headers.get('location');
      await response.arrayBuffer();
      if (!locationHeader) throw new ProviderPageError(`redirect without Location at ${url}`, url, response.status, '');
      const location = new URL(locationHeader, url).href;
      if (new URL(location).origin !== providerOrigin) return location;
      url = location;
      response = await browserFetch(jar, url);
      continue;
    }
    const html = await response.text();
    if (response.status !== 200) {
      throw new ProviderPageError(`provider answered ${response.status} at ${url}: ${describeErrorPage(html)}`, url, response.status, html);
    }
    const form = parseForms(html).find((f) => f.id === 'op.logoutForm');
    if (!form) return url; // the success page
    response = await submitForm(jar, url, form, { ...form.fields, ...(opts.confirm === false ? {} : { logout: 'yes' }) });
    url = new URL(form.action || url, url).href;
  }
  throw new Error(`completeProviderLogout: gave up after ${opts.maxSteps ?? 10} steps (last URL ${url})`);
}
