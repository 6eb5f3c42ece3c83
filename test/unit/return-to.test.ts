import { describe, expect, it } from 'vitest';
import { safeReturnTo } from '../../src/routes/return-to.js';

describe('returnTo after login', () => {
  it.each([
    ['/'],
    ['/orders'],
    ['/orders/42?tab=items#top'],
    ['/a%20b'],
    ['/search?q=%2F%2Fnot-a-host'],
  ])('keeps the same-origin path %s', (path) => {
    expect(safeReturnTo(path)).toBe(path);
  });

  it.each([
    ['protocol-relative', '//evil.example'],
    ['protocol-relative with path', '//evil.example/path'],
    ['absolute https', 'https://evil.example'],
    ['absolute http', 'http://evil.example/x'],
    ['backslash host', '/\\evil.example'],
    ['backslash only', '\\\\evil.example'],
    ['javascript scheme', 'javascript:alert(1)'],
    ['data scheme', 'data:text/html,<script>alert(1)</script>'],
    ['relative without slash', 'evil.example'],
    ['encoded slashes', '/%2F%2Fevil.example'],
    ['encoded backslash', '/%5Cevil.example'],
    ['double-encoded slashes', '/%252F%252Fevil.example'],
    ['encoded scheme', '%68ttps://evil.example'],
    ['CRLF injection', '/ok\r\nSet-Cookie: x=1'],
    ['encoded CRLF', '/ok%0d%0aSet-Cookie:%20x=1'],
    ['tab inside host', '/\t/evil.example'],
    ['NUL byte', '/ok\u0000'],
    ['unicode line separator', '/ok\u2028x'],
    ['broken encoding', '/%E0%A4%A'],
    ['empty', ''],
    ['too long', `/${'a'.repeat(5000)}`],
  ])('falls back to / for %s', (_name, hostile) => {
    expect(safeReturnTo(hostile)).toBe('/');
  });

  it('falls back to / when returnTo is repeated or not a string', () => {
    expect(safeReturnTo(['/a', '/b'])).toBe('/');
    expect(safeReturnTo(undefined)).toBe('/');
    expect(safeReturnTo(42)).toBe('/');
  });

  it('never yields anything but a single-slash path', () => {
    for (const probe of ['/./../..//evil.example', '/..//evil.example', '/%2e%2e//evil.example', '/\u3000/evil.example']) {
      const result = safeReturnTo(probe);
      expect(result.startsWith('/')).toBe(true);
      expect(result.startsWith('//')).toBe(false);
    }
  });
});
