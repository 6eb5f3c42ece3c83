import { badRequest } from '../errors.js';

/** What a browser may ask of the provider at `GET /auth/login` (each checked here). */
export interface LoginParams {
  prompt?: string;
  login_hint?: string;
  ui_locales?: string;
  acr_values?: string;
  max_age?: string;
}

const PROMPTS = new Set(['none', 'login', 'consent', 'select_account']);
const LOCALE = /^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const MAX_HINT_LENGTH = 256;
const MAX_LOCALES = 10;
const MAX_AGE_LIMIT = 31_536_000;

/**
 * The login parameters of a `/auth/login` query, checked: `prompt` from the four OIDC
 * values (`none` alone), `login_hint` up to 256 characters without control characters,
 * `ui_locales` as up to ten language tags, `acr_values` only from `allowedAcr`, `max_age`
 * as whole seconds up to a year. Anything else → 400 `bad_request`; a parameter given twice too.
 */
export function loginParamsOf(query: unknown, allowedAcr: ReadonlySet<string>): LoginParams {
  const params: LoginParams = {};
  if (typeof query !== 'object' || query === null) return params;
  const source = query as Record<string, unknown>;
  const single = (name: keyof LoginParams): string | undefined => {
    const value = source[name];
    if (value === undefined) return undefined;
    if (typeof value !== 'string') throw badRequest(`The login parameter ${name} was given more than once.`);
    if (value === '') throw badRequest(`The login parameter ${name} is empty.`);
    return value;
  };

  const prompt = single('prompt');
  if (prompt !== undefined) {
    const values = prompt.split(' ');
    if (!values.every((value) => PROMPTS.has(value)) || new Set(values).size !== values.length) {
      throw badRequest('The login parameter prompt must be none, login, consent or select_account (space-separated).');
    }
    if (values.includes('none') && values.length > 1) throw badRequest('The login parameter prompt=none cannot be combined with other values.');
    params.prompt = prompt;
  }

  const loginHint = single('login_hint');
  if (loginHint !== undefined) {
    if (loginHint.length > MAX_HINT_LENGTH || CONTROL.test(loginHint)) {
      throw badRequest(`The login parameter login_hint must be at most ${MAX_HINT_LENGTH} characters, without control characters.`);
    }
    params.login_hint = loginHint;
  }

  const uiLocales = single('ui_locales');
  if (uiLocales !== undefined) {
    const tags = uiLocales.split(' ');
    if (tags.length > MAX_LOCALES || !tags.every((tag) => LOCALE.test(tag))) {
      throw badRequest(`The login parameter ui_locales must be up to ${MAX_LOCALES} space-separated language tags (e.g. "de-CH en").`);
    }
    params.ui_locales = uiLocales;
  }

  const acrValues = single('acr_values');
  if (acrValues !== undefined) {
    const values = acrValues.split(' ');
    if (!values.every((value) => allowedAcr.has(value))) {
      throw badRequest('The login parameter acr_values names a value this application does not offer.');
    }
    params.acr_values = acrValues;
  }

  const maxAge = single('max_age');
  if (maxAge !== undefined) {
    if (!/^\d{1,9}$/.test(maxAge) || Number(maxAge) > MAX_AGE_LIMIT) {
      throw badRequest(`The login parameter max_age must be whole seconds from 0 to ${MAX_AGE_LIMIT}.`);
    }
    params.max_age = String(Number(maxAge));
  }
  return params;
}

/** Errors a provider answers a `prompt=none` login with when it cannot sign the user in silently (OIDC Core 3.1.2.6). */
export const SILENT_LOGIN_REFUSALS: ReadonlySet<string> = new Set(['login_required', 'consent_required', 'interaction_required', 'account_selection_required']);

/** `returnTo` (a safe same-origin path) with `error=<code>` added to its query. */
export function withError(returnTo: string, code: string): string {
  const url = new URL(returnTo, 'http://return-to.invalid');
  url.searchParams.set('error', code);
  return `${url.pathname}${url.search}${url.hash}`;
}
