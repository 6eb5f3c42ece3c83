import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { Writable } from 'node:stream';
import { buildApp, type BuildOptions } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { completeProviderLogin } from './browser.js';

/** The origin the browser "sees"; requests reach the app through inject, so it never has to resolve. */
export const PUBLIC_URL = 'https://app.example.test';
export const REDIRECT_URI = `${PUBLIC_URL}/auth/callback`;
export const SECRET = 'test-secret-test-secret-test-secret-0001';

export interface TestBff {
  app: FastifyInstance;
  config: Config;
  /** Every log line the app wrote, as parsed JSON. */
  logs: Array<Record<string, unknown>>;
  /** The log lines written after start-up (start-up warnings about the configuration left out). */
  logsAfterStart: Array<Record<string, unknown>>;
  /** The raw log text, for leak scans. */
  logText(): string;
}

/** Everything started in this test file, for the leak guard (test/support/leak-guard.ts). */
export const startedBffs: TestBff[] = [];
export const browsers: TestBrowser[] = [];

/** Builds token-handler for a test from raw configuration (validated like a real file) and waits for discovery. */
export async function startBff(raw: Record<string, unknown>, options: Omit<BuildOptions, 'logStream'> = {}): Promise<TestBff> {
  // Tests log in many times from one address; the rate-limit specification sets its own limits.
  // Tests read /metrics through inject, and several run at once: on the main listener
  // unless a test configures metrics itself (the default is a separate port, 9090).
  const config = parseConfig({
    publicUrl: PUBLIC_URL,
    rateLimit: { loginPerMinute: 100_000, callbackPerMinute: 100_000 },
    metrics: { onMainListener: true },
    ...raw,
  });
  const chunks: string[] = [];
  const logStream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  const app = await buildApp(config, { ...options, logStream, waitForProvider: options.waitForProvider ?? true });
  await app.ready();
  const parse = (text: string) => text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
  const startupChunks = chunks.length;
  const bff: TestBff = {
    app,
    config,
    get logs() {
      return parse(chunks.join(''));
    },
    get logsAfterStart() {
      return parse(chunks.slice(startupChunks).join(''));
    },
    logText: () => chunks.join(''),
  };
  startedBffs.push(bff);
  return bff;
}

interface InjectOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS';
  headers?: Record<string, string>;
  payload?: string | Buffer | object;
  /** Send the CSRF header (default true for anything but GET /auth/*). */
  csrf?: boolean;
}

/**
 * A browser as token-handler sees it: a cookie jar applied to inject requests. Keeps
 * every response it received so tests can scan them for tokens.
 */
export class TestBrowser {
  readonly cookies = new Map<string, string>();
  readonly responses: LightMyRequestResponse[] = [];

  constructor(private readonly app: FastifyInstance) {
    browsers.push(this);
  }

  cookieHeader(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  async request(url: string, options: InjectOptions = {}): Promise<LightMyRequestResponse> {
    const method = options.method ?? 'GET';
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (this.cookies.size > 0 && headers.cookie === undefined) headers.cookie = this.cookieHeader();
    if (options.csrf ?? true) headers['x-csrf'] ??= '1';
    const response = await this.app.inject({ method, url, headers, ...(options.payload !== undefined ? { payload: options.payload } : {}) });
    this.store(response);
    this.responses.push(response);
    return response;
  }

  /** Applies Set-Cookie like a browser: Max-Age=0 or a past Expires deletes. */
  store(response: LightMyRequestResponse): void {
    for (const cookie of response.cookies as Array<{ name: string; value: string; maxAge?: number; expires?: Date }>) {
      const expired = cookie.maxAge !== undefined ? cookie.maxAge <= 0 : cookie.expires !== undefined && cookie.expires.getTime() <= Date.now();
      if (expired || cookie.value === '') this.cookies.delete(cookie.name);
      else this.cookies.set(cookie.name, cookie.value);
    }
  }

  /** The whole login: /auth/login, the provider's pages, /auth/callback. Returns the callback response. */
  async login(options: { returnTo?: string; login?: string } = {}): Promise<LightMyRequestResponse> {
    const start = await this.startLogin(options.returnTo);
    const callbackUrl = await completeProviderLogin(start, { login: options.login ?? 'alice' });
    return this.callback(callbackUrl);
  }

  /** Starts a login; returns the provider URL it redirects to. */
  async startLogin(returnTo?: string): Promise<string> {
    const query = returnTo === undefined ? '' : `?returnTo=${encodeURIComponent(returnTo)}`;
    const response = await this.request(`/auth/login${query}`, { csrf: false });
    if (response.statusCode !== 302) throw new Error(`login did not redirect: ${response.statusCode} ${response.body}`);
    return String(response.headers.location);
  }

  /** Delivers the provider's redirect back to the app. */
  async callback(callbackUrl: string): Promise<LightMyRequestResponse> {
    const url = new URL(callbackUrl);
    return this.request(`${url.pathname}${url.search}`, { csrf: false });
  }

  /** Everything this browser received: bodies, headers and cookie values. */
  received(): string {
    return this.responses.map((r) => `${JSON.stringify(r.headers)}\n${r.body}`).join('\n');
  }
}
