const FALLBACK = '/';
const MAX_LENGTH = 2048;
const BASE = 'http://return-to.invalid';

/**
 * The path to send the browser to after login: only a same-origin relative path.
 * Anything else — protocol-relative `//host`, `/\host`, absolute URLs, `javascript:`,
 * control characters, or any of these hidden behind percent-encoding — falls back to `/`
 * (an app below a path prefix: its own start page).
 */
export function safeReturnTo(raw: unknown, fallback: string = FALLBACK): string {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > MAX_LENGTH) return fallback;
  if (!isHarmlessPath(raw)) return fallback;
  // Browsers and servers may decode once more; the decoded forms must be harmless too.
  let decoded = raw;
  for (let i = 0; i < 3; i++) {
    let next: string;
    try {
      next = decodeURIComponent(decoded);
    } catch {
      return fallback;
    }
    if (next === decoded) break;
    if (!isHarmlessPath(next)) return fallback;
    decoded = next;
  }
  const url = new URL(raw, BASE);
  if (url.origin !== BASE || url.pathname.startsWith('//')) return fallback;
  return `${url.pathname}${url.search}${url.hash}`;
}

function isHarmlessPath(path: string): boolean {
  return (
    path.startsWith('/') &&
    !path.startsWith('//') &&
    !path.includes('\\') &&
    // eslint-disable-next-line no-control-regex
    !/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(path)
  );
}
