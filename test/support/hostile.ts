/**
 * Helpers for the hostile input suite (test/hostile.test.ts): raw HTTP over a TCP socket
 * (for requests light-my-request or fetch would refuse or normalise), the error-answer
 * contract every hostile case must meet, and a "bystander" session that keeps calling the
 * API while hostile input is thrown at the same process.
 */
import { connect } from 'node:net';
import { expect } from 'vitest';
import type { TestBrowser } from './bff.js';

/** Every raw response received in this file, for the token leak scan at the end. */
export const rawTranscripts: string[] = [];

export interface RawResponse {
  /** The whole response as received (latin1), possibly empty. */
  text: string;
  /** 0 when the server closed the connection without a response. */
  status: number;
  /** Header lines exactly as received (without the status line). */
  headerLines: string[];
  /** Lower-cased header name → every value. */
  headers: Record<string, string[]>;
  /** The body, de-chunked. */
  body: string;
}

/**
 * Sends `request` as-is on a new TCP connection and reads until the server closes it
 * (send `Connection: close`). Resolves on close, error or timeout with whatever arrived.
 */
export function rawHttp(port: number, request: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      rawTranscripts.push(text);
      resolve(parseRawResponse(text));
    };
    const socket = connect(port, '127.0.0.1', () => {
      // Strings are written byte for byte (latin1), so tests control every octet on the wire.
      socket.write(typeof request === 'string' ? Buffer.from(request, 'latin1') : request);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', finish);
    socket.on('close', finish);
    // EPIPE/ECONNRESET when the server answers and closes before the whole request was written.
    socket.on('error', finish);
    const timer = setTimeout(finish, timeoutMs);
  });
}

/** Builds a raw HTTP/1.1 request (CRLF line ends, `Connection: close`). Header values are not validated. */
export function rawRequest(method: string, target: string, headers: Array<[string, string]> = [], body?: string | Buffer): Buffer {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: app.example.test', ...headers.map(([n, v]) => `${n}: ${v}`), 'Connection: close'];
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  return body === undefined ? head : Buffer.concat([head, typeof body === 'string' ? Buffer.from(body, 'latin1') : body]);
}

export function parseRawResponse(text: string): RawResponse {
  const end = text.indexOf('\r\n\r\n');
  if (!text.startsWith('HTTP/1.1 ') || end === -1) return { text, status: 0, headerLines: [], headers: {}, body: '' };
  const [statusLine = '', ...headerLines] = text.slice(0, end).split('\r\n');
  const status = Number(statusLine.split(' ')[1]);
  const headers: Record<string, string[]> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    (headers[name] ??= []).push(line.slice(colon + 1).trim());
  }
  let body = text.slice(end + 4);
  if (headers['transfer-encoding']?.some((v) => v.toLowerCase() === 'chunked')) body = dechunk(body);
  return { text, status, headerLines, headers, body };
}

function dechunk(raw: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const lineEnd = raw.indexOf('\r\n', at);
    if (lineEnd === -1) return out;
    const size = parseInt(raw.slice(at, lineEnd), 16);
    if (!Number.isFinite(size) || size === 0) return out;
    out += raw.slice(lineEnd + 2, lineEnd + 2 + size);
    at = lineEnd + 2 + size + 2;
  }
}

/** A header line the way a well-formed response has it: `token: value` with no control characters. */
const HEADER_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*$/;

/**
 * No response header was split or injected: every header line is well formed and none
 * of them carries a name or cookie the attacker tried to smuggle in.
 */
export function expectNoInjectedHeader(response: RawResponse, marker = 'pwn'): void {
  for (const line of response.headerLines) {
    expect(line, `malformed response header line ${JSON.stringify(line)}`).toMatch(HEADER_LINE);
  }
  expect(Object.keys(response.headers)).not.toContain('injected');
  for (const cookie of response.headers['set-cookie'] ?? []) expect(cookie.split('=', 1)[0]!.trim(), `injected cookie: ${cookie.slice(0, 80)}`).not.toBe(marker);
  expect(response.headers['location']?.length ?? 0).toBeLessThanOrEqual(1);
}

/** A stack frame ("at fn (file:line)") or a source/installation path. */
const STACK_FRAME = /\n\s*at\s|\bat\s+(?:async\s+)?[\w$.<>[\]]+\s+\(|\bat\s+(?:file:\/\/|\/)/;
const FILE_PATH = /(?:file:\/\/|\/[\w.@-]+\/)[\w./@-]*\.(?:ts|js|mjs|cjs)\b|node_modules|\/work\/|\/home\/|\/usr\/|[A-Z]:\\/;

export interface ErrorAnswer {
  status: number;
  body: string;
  contentType: string | undefined;
}

/**
 * The contract of every hostile case (docs/contracts.md "Browser errors"): a 4xx with a JSON body of
 * exactly `{error, error_description}` (strings), no stack trace, no file path.
 */
export function expectErrorAnswer(answer: ErrorAnswer, allowed?: readonly number[], context = ''): { error: string; error_description: string } {
  const where = context ? ` (${context})` : '';
  if (allowed) expect(allowed, `status ${answer.status}${where}: ${answer.body.slice(0, 300)}`).toContain(answer.status);
  expect(answer.status, `status${where}: ${answer.body.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
  expect(answer.status, `status${where}: ${answer.body.slice(0, 300)}`).toBeLessThan(500);
  expect(answer.contentType ?? '', `content-type${where}`).toMatch(/^application\/json\b/);
  expect(answer.body, `stack trace in the answer${where}`).not.toMatch(STACK_FRAME);
  expect(answer.body, `file path in the answer${where}`).not.toMatch(FILE_PATH);
  let json: unknown;
  try {
    json = JSON.parse(answer.body);
  } catch {
    throw new Error(`the answer is not JSON${where}: ${answer.body.slice(0, 300)}`);
  }
  expect(json, `error shape${where}`).toEqual({ error: expect.any(String), error_description: expect.any(String) });
  return json as { error: string; error_description: string };
}

export const fromInject = (response: { statusCode: number; body: string; headers: Record<string, unknown> }): ErrorAnswer => ({
  status: response.statusCode,
  body: response.body,
  contentType: response.headers['content-type'] === undefined ? undefined : String(response.headers['content-type']),
});

export const fromRaw = (response: RawResponse): ErrorAnswer => ({
  status: response.status,
  body: response.body,
  contentType: response.headers['content-type']?.[0],
});

/** Set-Cookie lines of an inject response. */
export function setCookiesOf(response: { headers: Record<string, unknown> }): string[] {
  const value = response.headers['set-cookie'];
  return value === undefined ? [] : ([] as string[]).concat(value as string | string[]);
}

/** A Set-Cookie that deletes (empty value or Max-Age=0). */
export function isClearing(setCookie: string): boolean {
  return /^[^=]+=;/.test(setCookie) || /;\s*Max-Age=0\b/i.test(setCookie);
}

/** The path an upstream saw stays inside `/v1`: no `..` segment after decoding, no other root. */
export function insidePrefix(url: string, prefix = '/v1'): boolean {
  const path = url.split('?', 1)[0]!;
  if (!(path === prefix || path.startsWith(`${prefix}/`))) return false;
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    decoded = path;
  }
  return !decoded.replaceAll('\\', '/').split('/').includes('..');
}

export interface BystanderReport {
  calls: number;
  failures: string[];
}

/**
 * A signed-in user minding their own business: calls the API (through inject and, when a
 * port is given, over the network) and `/auth/user` every `intervalMs` until stopped.
 * Every call must answer 200 for this user; anything else is recorded as a failure.
 */
export class Bystander {
  private calls = 0;
  private readonly failures: string[] = [];
  private running = true;
  private readonly loop: Promise<void>;
  /** Bodies and headers received over the network (inject responses are kept by TestBrowser). */
  readonly received: string[] = [];

  constructor(
    private readonly browser: TestBrowser,
    private readonly sub: string,
    private readonly port: number | undefined,
    private readonly intervalMs = 40,
  ) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    for (let i = 0; this.running; i++) {
      try {
        await this.once(i);
      } catch (err) {
        this.failures.push(`call ${i}: threw ${err instanceof Error ? err.message : String(err)}`);
      }
      this.calls++;
      await new Promise((resolve) => setTimeout(resolve, this.intervalMs));
    }
  }

  private async once(i: number): Promise<void> {
    const path = `/api/bystander/${i}`;
    if (i % 5 === 4) {
      const user = await this.browser.request('/auth/user', { csrf: false });
      if (user.statusCode !== 200 || user.json<{ claims: { sub: string } }>().claims.sub !== this.sub) {
        this.failures.push(`GET /auth/user → ${user.statusCode} ${user.body.slice(0, 200)}`);
      }
      return;
    }
    if (this.port !== undefined && i % 2 === 1) {
      const response = await fetch(`http://127.0.0.1:${this.port}${path}`, {
        headers: { cookie: this.browser.cookieHeader(), 'x-csrf': '1' },
      });
      const text = await response.text();
      this.received.push(`${JSON.stringify([...response.headers])}\n${text}`);
      for (const line of response.headers.getSetCookie()) {
        const [pair = ''] = line.split(';');
        const eq = pair.indexOf('=');
        const name = pair.slice(0, eq);
        const value = pair.slice(eq + 1);
        if (value === '' || /;\s*Max-Age=0\b/i.test(line)) this.browser.cookies.delete(name);
        else this.browser.cookies.set(name, value);
      }
      this.check(`GET ${path} (network)`, response.status, text);
      return;
    }
    const response = await this.browser.request(path);
    this.check(`GET ${path} (inject)`, response.statusCode, response.body);
  }

  private check(what: string, status: number, text: string): void {
    let echo: { sub?: string; path?: string } = {};
    try {
      echo = JSON.parse(text) as typeof echo;
    } catch {
      // reported below
    }
    if (status !== 200 || echo.sub !== this.sub || !echo.path?.startsWith('/v1/bystander/')) {
      this.failures.push(`${what} → ${status} ${text.slice(0, 200)}`);
    }
  }

  async stop(): Promise<BystanderReport> {
    this.running = false;
    await this.loop;
    return { calls: this.calls, failures: [...this.failures] };
  }
}
