/**
 * A real upstream API (node:http on 127.0.0.1) that accepts `Authorization: Bearer <token>` and
 * checks the token at the provider's introspection endpoint (client_secret_basic).
 *
 * Routes (matched on the END of the path, so they work whether or not the BFF keeps a prefix such
 * as /api when proxying: `/status/503` and `/api/status/503` are the same route):
 *   .../public/...        no token needed (echo, tokenActive: false)
 *   .../status/:code      answers :code (JSON `{"status":code}`, no body for 204/304)
 *   .../slow?ms=N         waits N ms, then echoes
 *   .../bytes?n=N         streams N bytes of application/octet-stream
 *   .../drip?chunks=N&ms=M  answers 200 without Content-Length (chunked) and sends one line every M ms, N in all
 *   .../untyped?n=N       answers 200 with N bytes and a Content-Length, but no Content-Type
 * Faults (a real API can fail like this; the token is still verified first):
 *   .../hang-up           closes the connection without answering
 *   .../reset?bytes=N     answers 200 with Content-Length 2N, sends N bytes, then resets the connection
 *   .../stall?bytes=N&ms=M  answers 200 with Content-Length 2N, sends N bytes, then sends nothing for M ms
 *                           (or until the connection closes), then the rest
 *   .../set-cookie        echoes, with `Set-Cookie: upstream_cookie=1; Path=/; HttpOnly`
 *   anything else         200 JSON echo `{ method, path, query, sub, body, headers }`
 * With `jwt` options, tokens that are JWTs are verified against the provider's JWKS (signature,
 * issuer, audience, expiry) instead of introspected.
 * Missing/inactive token → 401 `{"error":"invalid_token"}` + `WWW-Authenticate: Bearer error="invalid_token"`.
 * Provider unreachable during introspection → 503 `{"error":"introspection_failed"}`.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';

import { createRemoteJWKSet, jwtVerify } from 'jose';

import { closeServer, listen, originOf } from './ports.js';

export interface UpstreamRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  tokenActive: boolean;
  sub?: string;
  /** full introspection response when a token was checked */
  introspection?: Record<string, unknown>;
  at: number;
}

export interface UpstreamOptions {
  introspectionEndpoint: string;
  clientId: string;
  clientSecret: string;
  /** Verify JWT access tokens locally against the provider's keys (accessTokenFormat: 'jwt'). */
  jwt?: { jwksUri: string; issuer: string; audience: string; /** Refuse every token that is not a JWT for this audience (no introspection). */ only?: boolean };
  /** Cache introspection results per token for 1 s (for benchmarks). Default false. */
  cacheTokens?: boolean;
  port?: number;
}

export interface Upstream {
  /** e.g. http://127.0.0.1:PORT (no trailing slash) */
  url: string;
  port: number;
  requests: UpstreamRequest[];
  /** number of calls made to the introspection endpoint */
  introspectionCalls(): number;
  close(): Promise<void>;
}

export interface EchoBody {
  method: string;
  path: string;
  query: Record<string, string | string[]>;
  sub?: string;
  body: string;
  headers: IncomingHttpHeaders;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': payload.length, ...headers });
  res.end(payload);
}

function queryObject(url: URL): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key);
    query[key] = values.length === 1 ? values[0]! : values;
  }
  return query;
}

export async function startUpstream(opts: UpstreamOptions): Promise<Upstream> {
  const requests: UpstreamRequest[] = [];
  const cache = new Map<string, { result: Record<string, unknown>; until: number }>();
  const basic = `Basic ${Buffer.from(
    `${encodeURIComponent(opts.clientId)}:${encodeURIComponent(opts.clientSecret)}`,
  ).toString('base64')}`;
  let introspections = 0;

  const jwks = opts.jwt ? createRemoteJWKSet(new URL(opts.jwt.jwksUri)) : undefined;

  async function introspect(token: string): Promise<Record<string, unknown>> {
    if (jwks && opts.jwt && token.split('.').length === 3) {
      try {
        const { payload } = await jwtVerify(token, jwks, { issuer: opts.jwt.issuer, audience: opts.jwt.audience });
        return { ...payload, active: true, verifiedBy: 'jwks' };
      } catch {
        return { active: false };
      }
    }
    if (opts.jwt?.only) return { active: false };
    if (opts.cacheTokens) {
      const hit = cache.get(token);
      if (hit && hit.until > Date.now()) return hit.result;
    }
    introspections++;
    const response = await fetch(opts.introspectionEndpoint, {
      method: 'POST',
      headers: {
        authorization: basic,
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      body: new URLSearchParams({ token }).toString(),
      redirect: 'manual',
    });
    if (response.status !== 200) throw new Error(`introspection answered ${response.status}: ${await response.text()}`);
    const result = (await response.json()) as Record<string, unknown>;
    if (opts.cacheTokens) cache.set(token, { result, until: Date.now() + 1000 });
    return result;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const at = Date.now();
    const url = new URL(req.url ?? '/', 'http://upstream.invalid');
    const body = await readBody(req);
    const record: UpstreamRequest = {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      headers: req.headers,
      body,
      tokenActive: false,
      at,
    };

    const isPublic = /(?:^|\/)public(?:\/|$)/.test(url.pathname);
    if (!isPublic) {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
      let result: Record<string, unknown> | undefined;
      if (match) {
        try {
          result = await introspect(match[1]!);
        } catch (err) {
          requests.push(record);
          sendJson(res, 503, { error: 'introspection_failed', error_description: String(err) });
          return;
        }
      }
      if (result) record.introspection = result;
      if (result?.active !== true) {
        requests.push(record);
        sendJson(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
        return;
      }
      record.tokenActive = true;
      if (typeof result.sub === 'string') record.sub = result.sub;
    }
    requests.push(record);

    // Like a real API, never send the bearer token back (the leak guard would rightly flag it);
    // tests read the exact headers from `requests`.
    const { authorization, ...echoedHeaders } = req.headers;
    const echo: EchoBody = {
      method: record.method,
      path: url.pathname,
      query: queryObject(url),
      body: body.toString('utf8'),
      headers: { ...echoedHeaders, ...(authorization ? { authorization: '[present]' } : {}) },
    };
    if (record.sub !== undefined) echo.sub = record.sub;

    const status = /(?:^|\/)status\/(\d{3})$/.exec(url.pathname);
    if (status) {
      const code = Number(status[1]);
      if (code === 204 || code === 304 || code < 200) {
        res.writeHead(code);
        res.end();
      } else {
        sendJson(res, code, { status: code, ...echo });
      }
      return;
    }

    if (/(?:^|\/)slow$/.test(url.pathname)) {
      const ms = Number(url.searchParams.get('ms') ?? '1000');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        res.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (!res.destroyed && !res.writableEnded) sendJson(res, 200, echo);
      return;
    }

    if (/(?:^|\/)bytes$/.test(url.pathname)) {
      let remaining = Number(url.searchParams.get('n') ?? '0');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': remaining });
      const chunk = Buffer.alloc(64 * 1024, 'a');
      const pump = () => {
        while (remaining > 0 && !res.destroyed) {
          const size = Math.min(remaining, chunk.length);
          remaining -= size;
          if (!res.write(size === chunk.length ? chunk : chunk.subarray(0, size))) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }

    if (/(?:^|\/)untyped$/.test(url.pathname)) {
      const n = Number(url.searchParams.get('n') ?? '0');
      res.writeHead(200, { 'content-length': n });
      res.end(Buffer.alloc(n, 'u'));
      return;
    }

    if (/(?:^|\/)drip$/.test(url.pathname)) {
      const chunks = Number(url.searchParams.get('chunks') ?? '3');
      const ms = Number(url.searchParams.get('ms') ?? '200');
      res.writeHead(200, { 'content-type': 'text/plain' });
      for (let i = 1; i <= chunks && !res.destroyed; i++) {
        if (i > 1) await new Promise((resolve) => setTimeout(resolve, ms));
        res.write(`line ${i} of ${chunks}\n`);
      }
      res.end();
      return;
    }

    if (/(?:^|\/)hang-up$/.test(url.pathname)) {
      res.destroy();
      return;
    }

    const partial = /(?:^|\/)(reset|stall)$/.exec(url.pathname);
    if (partial) {
      const half = Number(url.searchParams.get('bytes') ?? '1024');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': half * 2 });
      await new Promise<void>((resolve) => res.write(Buffer.alloc(half, 'p'), () => resolve()));
      if (partial[1] === 'reset') {
        // A crash mid-response: the socket goes away with half the promised body sent.
        res.socket?.resetAndDestroy?.();
        res.destroy();
        return;
      }
      const ms = Number(url.searchParams.get('ms') ?? '1000');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        res.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (!res.destroyed) res.end(Buffer.alloc(half, 'p'));
      return;
    }

    if (/(?:^|\/)set-cookie$/.test(url.pathname)) {
      sendJson(res, 200, echo, { 'set-cookie': 'upstream_cookie=1; Path=/; HttpOnly' });
      return;
    }

    sendJson(res, 200, echo);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: 'upstream_error', error_description: String(err) });
      else res.destroy();
    });
  });
  const port = await listen(server, opts.port ?? 0);

  return {
    url: originOf(port),
    port,
    requests,
    introspectionCalls: () => introspections,
    close: () => closeServer(server),
  };
}

/** The usual test API: it checks every bearer token by introspection at this provider, as its `api` client. */
export function startIntrospectingUpstream(provider: { endpoints: { introspection: string }; clients: { api: { clientId: string; clientSecret: string } } }): Promise<Upstream> {
  return startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
}
