import { describe, expect, it } from 'vitest';
import { SessionCookies } from '../../src/session/cookies.js';
import { browserResponseHeaders, upstreamRequestHeaders } from '../../src/proxy/headers.js';

const cookies = new SessionCookies({ secure: true, cookieName: 'th_session', sameSite: 'strict' });
const forwarded = { ip: '10.1.2.3', proto: 'https', host: 'app.example.com' };

describe('headers sent to the upstream', () => {
  it("drop token-handler's cookies, the browser's Authorization and the CSRF header, and add the token", () => {
    const headers = upstreamRequestHeaders(
      {
        cookie: '__Host-th_session=sealed; theme=dark; __Host-th_session.0=a; __Host-th_session.1=b; __Host-th_session_login.abc=p; lang=en',
        authorization: 'Bearer forged-by-browser',
        'x-csrf': '1',
        accept: 'application/json',
      },
      { cookies, stripCookies: 'own', csrfHeader: 'x-csrf' },
      forwarded,
      'Bearer real-token',
    );
    expect(headers.cookie).toBe('theme=dark; lang=en');
    expect(headers.authorization).toBe('Bearer real-token');
    expect(headers['x-csrf']).toBeUndefined();
    expect(headers.accept).toBe('application/json');
    expect(headers['x-forwarded-for']).toBe('10.1.2.3');
    expect(headers['x-forwarded-proto']).toBe('https');
    expect(headers['x-forwarded-host']).toBe('app.example.com');
  });

  it('keep every other cookie pair as the browser sent it, odd ones included, and drop blank pairs', () => {
    const headers = upstreamRequestHeaders(
      { cookie: ' a=1; ;  =x; __Host-th_session=sealed=with=equals;flag; __Host-th_session.2=c;b=2 ' },
      { cookies, stripCookies: 'own', csrfHeader: 'x-csrf' },
      forwarded,
      undefined,
    );
    expect(headers.cookie).toBe('a=1; =x; flag; b=2');
  });

  it('send no Cookie header when only token-handler cookies were sent', () => {
    const headers = upstreamRequestHeaders({ cookie: '__Host-th_session=sealed' }, { cookies, stripCookies: 'own', csrfHeader: 'x-csrf' }, forwarded, undefined);
    expect(headers.cookie).toBeUndefined();
  });

  it('drop every cookie when the route says stripCookies: all', () => {
    const headers = upstreamRequestHeaders({ cookie: 'theme=dark' }, { cookies, stripCookies: 'all', csrfHeader: 'x-csrf' }, forwarded, undefined);
    expect(headers.cookie).toBeUndefined();
    expect(headers.authorization).toBeUndefined();
  });

  it('drop hop-by-hop headers and those the Connection header names', () => {
    const headers = upstreamRequestHeaders(
      { connection: 'keep-alive, x-secret-hop', 'x-secret-hop': '1', te: 'trailers', upgrade: 'h2c', 'keep-alive': 'timeout=5' },
      { cookies, stripCookies: 'own', csrfHeader: 'x-csrf' },
      forwarded,
      undefined,
    );
    expect(Object.keys(headers).filter((h) => !h.startsWith('x-forwarded'))).toEqual([]);
  });

  it("send only the client address token-handler determined as X-Forwarded-For, never the browser's own chain", () => {
    const headers = upstreamRequestHeaders({ 'x-forwarded-for': '192.0.2.1' }, { cookies, stripCookies: 'own', csrfHeader: 'x-csrf' }, forwarded, undefined);
    expect(headers['x-forwarded-for']).toBe('10.1.2.3');
  });

  it('drop every forwarding, original-URL and method-override header the browser wrote', () => {
    const headers = upstreamRequestHeaders(
      {
        forwarded: 'for=1.2.3.4;host=evil.example',
        'x-forwarded-host': 'evil.example',
        'x-forwarded-proto': 'http',
        'x-forwarded-port': '1',
        'x-forwarded-prefix': '/admin',
        'x-real-ip': '1.2.3.4',
        'x-original-url': '/admin',
        'x-rewrite-url': '/admin',
        'x-http-method-override': 'DELETE',
        expect: '100-continue',
        accept: 'application/json',
      },
      { cookies, stripCookies: 'own', csrfHeader: 'x-csrf' },
      forwarded,
      undefined,
    );
    expect(headers).toEqual({ accept: 'application/json', 'x-forwarded-for': '10.1.2.3', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example.com' });
  });
});

describe('headers passed back to the browser', () => {
  it("never let the upstream overwrite token-handler's cookies, but pass its own", () => {
    const headers = browserResponseHeaders(
      {
        'set-cookie': ['__Host-th_session=evil; Path=/', '__Host-th_session.0=evil', 'upstream_pref=1; Path=/', '__Host-th_session_login.s=x'],
        'content-type': 'application/json',
        'transfer-encoding': 'chunked',
        connection: 'close',
      },
      cookies,
    );
    expect(headers['set-cookie']).toEqual(['upstream_pref=1; Path=/']);
    expect(headers['content-type']).toBe('application/json');
    expect(headers['transfer-encoding']).toBeUndefined();
    expect(headers.connection).toBeUndefined();
  });
});
