import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errors, type Pool } from 'undici';
import { BrowserError } from '../../src/errors.js';
import {
  AbortedByProxy,
  callUpstream,
  isTimeout,
  queryOf,
  upstreamPath,
  upstreamPool,
  type UpstreamError,
  type UpstreamRequest,
  type UpstreamResponse,
} from '../../src/proxy/upstream-exchange.js';

/** A real upstream on 127.0.0.1 whose answers the path chooses. */
let server: http.Server;
let origin: string;
let connections = 0;
let closedConnections = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const bytes = Number(url.searchParams.get('bytes') ?? 0);
    switch (url.pathname) {
      case '/small':
        res.setHeader('set-cookie', ['a=1', 'b=2']);
        res.writeHead(201, { 'content-type': 'application/json', 'X-Mixed-Case': 'yes' });
        res.end('{"ok":true}');
        return;
      case '/big':
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes) });
        res.end(Buffer.alloc(bytes, 'b'));
        return;
      case '/rejected':
        res.writeHead(401, { 'content-type': 'text/plain', 'content-length': '12' });
        res.end('unauthorized');
        return;
      case '/stall':
        // Half the announced body, then nothing.
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(bytes * 2) });
        res.write(Buffer.alloc(bytes, 's'));
        return;
      case '/reset':
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(bytes * 2) });
        res.write(Buffer.alloc(bytes, 'r'), () => res.socket?.destroy());
        return;
      case '/silent':
        return;
      case '/echo':
        req.on('data', () => undefined);
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, length: req.headers['content-length'] ?? null }));
        });
        return;
      default:
        res.writeHead(404).end();
    }
  });
  server.on('connection', (socket) => {
    connections++;
    socket.on('close', () => closedConnections++);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  server.close();
});

function poolOf(connectionLimit: number | null = null): Pool {
  return upstreamPool(origin, { connections: connectionLimit, keepAliveTimeoutMs: 4_000, connectTimeoutMs: 1_000, rejectUnauthorized: true });
}

function get(path: string, timeoutMs = 2_000): UpstreamRequest {
  return { method: 'GET', path, headers: {}, body: null, timeoutMs };
}

/** Calls the upstream and settles with its answer or its failure, reading the body as `read` says. */
function call(
  pool: Pool,
  request: UpstreamRequest,
  read: (response: UpstreamResponse, settle: (outcome: Outcome) => void) => void,
): Promise<Outcome> {
  return new Promise((resolve) => {
    callUpstream(pool, request, {
      response: (response) => read(response, resolve),
      failed: (error) => resolve({ failed: error }),
    });
  });
}

interface Outcome {
  response?: UpstreamResponse;
  body?: Buffer;
  error?: UpstreamError | null;
  failed?: UpstreamError;
}

const whole = (response: UpstreamResponse, settle: (outcome: Outcome) => void): void =>
  response.body.readWhole((error, body) => settle({ response, error, ...(body ? { body } : {}) }));

describe('a call to the upstream', () => {
  it('gives a small answer whole, with its status and its headers named in lower case (Set-Cookie a list)', async () => {
    const pool = poolOf();
    const outcome = await call(pool, get('/small'), whole);
    expect(outcome.error).toBeNull();
    expect(outcome.response?.statusCode).toBe(201);
    expect(outcome.response?.headers['x-mixed-case']).toBe('yes');
    expect(outcome.response?.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(outcome.body?.toString()).toBe('{"ok":true}');
    await pool.destroy();
  });

  it('still gives a body that ended before it was asked for', async () => {
    const pool = poolOf();
    const outcome = await call(pool, get('/small'), (response, settle) => {
      setTimeout(() => whole(response, settle), 50);
    });
    expect(outcome.body?.toString()).toBe('{"ok":true}');
    await pool.destroy();
  });

  it('streams a large answer to a slow reader, every byte in order', async () => {
    const pool = poolOf();
    const size = 8 * 1024 * 1024;
    const outcome = await call(pool, get(`/big?bytes=${size}`), (response, settle) => {
      const stream = response.body.stream();
      let length = 0;
      let allB = true;
      stream.on('data', (chunk: Buffer) => {
        length += chunk.length;
        allB &&= chunk.every((byte) => byte === 0x62);
        // A slow reader: undici must pause the upstream meanwhile rather than buffer it all.
        stream.pause();
        setImmediate(() => stream.resume());
      });
      stream.on('end', () => settle({ response, body: Buffer.from(allB ? String(length) : 'corrupt') }));
      stream.on('error', (error) => settle({ response, error }));
    });
    expect(outcome.body?.toString()).toBe(String(size));
    await pool.destroy();
  });

  it('drops a discarded answer and keeps its connection for the next call', async () => {
    const pool = poolOf(1);
    const before = connections;
    const rejected = await call(pool, get('/rejected'), (response, settle) => {
      response.body.discard();
      settle({ response });
    });
    expect(rejected.response?.statusCode).toBe(401);
    const next = await call(pool, get('/small'), whole);
    expect(next.body?.toString()).toBe('{"ok":true}');
    expect(connections - before).toBe(1);
    await pool.destroy();
  });

  it('fails a whole read with AbortedByProxy when the proxy stops it, and closes that upstream connection', async () => {
    const pool = poolOf();
    const closedBefore = closedConnections;
    const outcome = await call(pool, get('/stall?bytes=1024'), (response, settle) => {
      response.body.readWhole((error) => settle({ response, error }));
      setTimeout(() => response.body.abort(), 50);
    });
    expect(outcome.error).toBeInstanceOf(AbortedByProxy);
    await expect.poll(() => closedConnections - closedBefore).toBe(1);
    await pool.destroy();
  });

  it('fails a whole read whose body breaks off, rather than giving half of it', async () => {
    const pool = poolOf();
    const outcome = await call(pool, get('/reset?bytes=1024'), whole);
    expect(outcome.body).toBeUndefined();
    expect(outcome.error).toBeInstanceOf(Error);
    await pool.destroy();
  });

  it('fails a whole read with a body timeout when the body stalls', async () => {
    const pool = poolOf();
    const outcome = await call(pool, get('/stall?bytes=10', 200), whole);
    expect(outcome.error?.code).toBe('UND_ERR_BODY_TIMEOUT');
    expect(isTimeout(outcome.error!)).toBe(true);
    await pool.destroy();
  });

  it('fails with a headers timeout, and no response, when the upstream says nothing', async () => {
    const pool = poolOf();
    const outcome = await call(pool, get('/silent', 200), whole);
    expect(outcome.response).toBeUndefined();
    expect(outcome.failed?.code).toBe('UND_ERR_HEADERS_TIMEOUT');
    expect(isTimeout(outcome.failed!)).toBe(true);
    await pool.destroy();
  });

  it('fails, not as a timeout, when nothing listens', async () => {
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    const pool = upstreamPool(`http://127.0.0.1:${port}`, { connections: null, keepAliveTimeoutMs: 1_000, connectTimeoutMs: 1_000, rejectUnauthorized: true });
    const outcome = await call(pool, get('/'), whole);
    expect(outcome.failed?.code).toBe('ECONNREFUSED');
    expect(isTimeout(outcome.failed!)).toBe(false);
    await pool.destroy();
  });

  it("counts undici's connect, headers and body timeouts as timeouts (504), and nothing else", () => {
    expect(isTimeout(new errors.ConnectTimeoutError())).toBe(true);
    expect(isTimeout(new errors.HeadersTimeoutError())).toBe(true);
    expect(isTimeout(new errors.BodyTimeoutError())).toBe(true);
    expect(isTimeout(new errors.SocketError('other side closed'))).toBe(false);
    expect(isTimeout(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBe(false);
  });

  it('sends a kept body with its method, path, query and headers as given', async () => {
    const pool = poolOf();
    const body = Buffer.from('{"a":1}');
    const outcome = await call(
      pool,
      { method: 'POST', path: '/echo?x=1&y=%20', headers: { host: 'api.example', 'content-length': String(body.length) }, body, timeoutMs: 2_000 },
      whole,
    );
    expect(JSON.parse(outcome.body!.toString())).toEqual({ method: 'POST', url: '/echo?x=1&y=%20', host: 'api.example', length: '7' });
    await pool.destroy();
  });
});

describe('the upstream path of a destination', () => {
  it('is the destination itself when it is a plain path', () => {
    expect(upstreamPath('/orders/42/items;v=1')).toBe('/orders/42/items;v=1');
    expect(upstreamPath('/a%2Fb/c')).toBe('/a%2Fb/c');
  });

  it('resolves single-dot segments and percent-encodes what a URL may not hold', () => {
    expect(upstreamPath('/a/./b')).toBe('/a/b');
    expect(upstreamPath('/a b/"c"')).toBe('/a%20b/%22c%22');
    expect(upstreamPath('/.well-known/x')).toBe('/.well-known/x');
  });

  it('refuses a dot-dot after or before a slash, also percent-encoded, with bad_request', () => {
    for (const dest of ['/a/../b', '/..x', '/a/%2e%2e/b', '/a/%2E%2E', '/x../y']) {
      let thrown: unknown;
      try {
        upstreamPath(dest);
      } catch (err) {
        thrown = err;
      }
      expect(thrown, dest).toBeInstanceOf(BrowserError);
      expect((thrown as BrowserError).code, dest).toBe('bad_request');
    }
  });

  it('takes the query as the browser sent it', () => {
    expect(queryOf('/api/x?b=2&a=%201')).toBe('?b=2&a=%201');
    expect(queryOf('/api/x')).toBe('');
  });
});
