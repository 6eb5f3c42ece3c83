import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import { badRequest } from '../errors.js';

/** How one route's calls reach its upstream: a keep-alive pool to its origin. */
export interface UpstreamPoolOptions {
  /** Most connections open to the upstream at once (null: as many as the load needs). */
  connections: number | null;
  keepAliveTimeoutMs: number;
  connectTimeoutMs: number;
  rejectUnauthorized: boolean;
  ca?: Buffer | undefined;
}

export function upstreamPool(origin: string, options: UpstreamPoolOptions): Pool {
  return new Pool(origin, {
    connections: options.connections,
    pipelining: 1,
    keepAliveTimeout: options.keepAliveTimeoutMs,
    connect: {
      timeout: options.connectTimeoutMs,
      rejectUnauthorized: options.rejectUnauthorized,
      ...(options.ca ? { ca: options.ca } : {}),
    },
  });
}

/** Characters a path may hold as they are (RFC 3986 pchar and '/'), which the URL parser would leave untouched. */
const PLAIN_PATH = /^\/[\w\-.~!$&'()*+,;=:@/%]*$/;

/**
 * The path a destination is called at, as the WHATWG URL parser writes it (dot segments,
 * also percent-encoded ones, resolved; other characters percent-encoded). @fastify/http-proxy
 * has refused destinations that leave the route (a `..` segment, `//`, absolute URLs) with
 * a 400; a `..` anywhere after a slash, or before one, is refused here too (`/..x`), as
 * reply-from always did. A plain path without a dot after a slash, two dots or an encoded
 * dot is its own answer, and costs no parse.
 */
export function upstreamPath(dest: string): string {
  if (PLAIN_PATH.test(dest) && !/\/\.|\.\.|%2e/i.test(dest)) return dest;
  let decoded: string;
  try {
    decoded = decodeURIComponent(dest);
  } catch {
    throw badRequest('The path is not valid percent-encoding.');
  }
  if (decoded === '..' || decoded.includes('/..') || decoded.includes('../')) throw badRequest('The path may not hold a dot-dot segment.');
  return new URL(dest, 'http://upstream.invalid').pathname;
}

/** The browser's query string, as it sent it ('' for none). */
export function queryOf(url: string): string {
  const mark = url.indexOf('?');
  return mark === -1 ? '' : url.slice(mark);
}

/** One call to an upstream, as the proxy makes it. */
export interface UpstreamRequest {
  method: string;
  /** The request target: path and query, as sent. */
  path: string;
  headers: IncomingHttpHeaders;
  /** A kept body (sent from memory, again on a replay), a streamed one, or none. */
  body: Buffer | Readable | null;
  /** How long the upstream may take to send its headers, and then between two body chunks. */
  timeoutMs: number;
}

/** An upstream's answer: its status and headers, and its body to be read as the proxy chooses. */
export interface UpstreamResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: UpstreamBody;
}

export interface UpstreamEvents {
  /** The headers arrived; the body is read as `response.body` is asked to (synchronously, or it is kept until asked). */
  response(response: UpstreamResponse): void;
  /** The upstream could not be reached or did not answer in time: no response came. */
  failed(error: UpstreamError): void;
}

/** undici's failure of a call, with its code (`UND_ERR_HEADERS_TIMEOUT`, `ECONNREFUSED`, …). */
export type UpstreamError = Error & { code?: string };

/** Whether a call's failure is the upstream being too slow (to accept the connection, to answer, to send its body), rather than unreachable or broken. */
export function isTimeout(error: UpstreamError): boolean {
  return error.code === 'UND_ERR_CONNECT_TIMEOUT' || error.code === 'UND_ERR_HEADERS_TIMEOUT' || error.code === 'UND_ERR_BODY_TIMEOUT';
}

/**
 * Sends a request to the upstream through `pool`. Dispatched with a handler of our own
 * rather than through `request()` or a proxy library: a small answer is then gathered
 * straight from undici's chunks, without a body stream, its listeners and a pipe per
 * request (see bench/README: the cheapest forwarding measured here).
 */
export function callUpstream(pool: Dispatcher, request: UpstreamRequest, events: UpstreamEvents): void {
  pool.dispatch(
    {
      method: request.method as Dispatcher.HttpMethod,
      path: request.path,
      headers: request.headers as Record<string, string | string[]>,
      body: request.body,
      headersTimeout: request.timeoutMs,
      bodyTimeout: request.timeoutMs,
    },
    new UpstreamBody(events),
  );
}

type Reading =
  | { kind: 'waiting' }
  | { kind: 'kept'; chunks: Buffer[] }
  | { kind: 'whole'; chunks: Buffer[]; length: number; done: (error: UpstreamError | null, body?: Buffer) => void }
  | { kind: 'stream'; stream: Readable }
  | { kind: 'discarded' }
  | { kind: 'ended' };

/**
 * The body of one upstream answer, and undici's handler of the exchange: the proxy says,
 * once it has seen the headers, whether it wants the body whole, as a stream, or not at all.
 */
export class UpstreamBody implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private reading: Reading = { kind: 'waiting' };
  /** What happened to the body before it was asked for (its end, or its failure). */
  private early: { error: UpstreamError | null } | undefined;

  constructor(private readonly events: UpstreamEvents) {}

  /** Gathers the whole body, then calls `done` with it (a body read in one chunk is that very Buffer). */
  readWhole(done: (error: UpstreamError | null, body?: Buffer) => void): void {
    const chunks = this.reading.kind === 'kept' ? this.reading.chunks : [];
    let length = 0;
    for (const chunk of chunks) length += chunk.length;
    if (this.early) {
      this.reading = { kind: 'ended' };
      if (this.early.error) done(this.early.error);
      else done(null, bodyOf(chunks, length));
      return;
    }
    this.reading = { kind: 'whole', chunks, length, done };
  }

  /** The body as a stream, read as fast as its reader takes it (undici pauses the upstream meanwhile). */
  stream(): Readable {
    const kept = this.reading.kind === 'kept' ? this.reading.chunks : [];
    const stream = new Readable({
      read: () => this.controller?.resume(),
      destroy: (error, callback) => {
        this.abort();
        callback(error);
      },
    });
    for (const chunk of kept) stream.push(chunk);
    if (this.early) {
      this.reading = { kind: 'ended' };
      if (this.early.error) stream.destroy(this.early.error);
      else stream.push(null);
    } else {
      this.reading = { kind: 'stream', stream };
    }
    return stream;
  }

  /** The body is not wanted (an answer replaced by a replay): it is read and dropped, so the connection is kept. */
  discard(): void {
    this.reading = this.early ? { kind: 'ended' } : { kind: 'discarded' };
  }

  /**
   * Stops the exchange: the browser has gone, or the answer will not be passed on. A body
   * being read whole fails with AbortedByProxy, so its reader still accounts for it.
   */
  abort(): void {
    const reading = this.reading;
    if (reading.kind === 'ended') return;
    this.reading = { kind: 'ended' };
    const reason = new AbortedByProxy();
    const controller = this.controller;
    if (controller && !controller.aborted) controller.abort(reason);
    if (reading.kind === 'whole') reading.done(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.reading = { kind: 'kept', chunks: [] };
    this.events.response({ statusCode, headers, body: this });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const reading = this.reading;
    switch (reading.kind) {
      case 'kept':
        reading.chunks.push(chunk);
        return;
      case 'whole':
        reading.chunks.push(chunk);
        reading.length += chunk.length;
        return;
      case 'stream':
        if (!reading.stream.push(chunk)) controller.pause();
        return;
      case 'waiting':
      case 'discarded':
      case 'ended':
        return;
    }
  }

  onResponseEnd(): void {
    const reading = this.reading;
    switch (reading.kind) {
      case 'kept':
        // Ended before the proxy asked for it: kept for readWhole or stream.
        this.early = { error: null };
        return;
      case 'whole':
        this.reading = { kind: 'ended' };
        reading.done(null, bodyOf(reading.chunks, reading.length));
        return;
      case 'stream':
        this.reading = { kind: 'ended' };
        reading.stream.push(null);
        return;
      case 'waiting':
      case 'discarded':
      case 'ended':
        this.reading = { kind: 'ended' };
        return;
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: UpstreamError): void {
    const reading = this.reading;
    switch (reading.kind) {
      case 'waiting':
        this.reading = { kind: 'ended' };
        this.events.failed(error);
        return;
      case 'kept':
        this.early = { error };
        return;
      case 'whole':
        this.reading = { kind: 'ended' };
        reading.done(error);
        return;
      case 'stream':
        this.reading = { kind: 'ended' };
        reading.stream.destroy(error);
        return;
      case 'discarded':
      case 'ended':
        this.reading = { kind: 'ended' };
        return;
    }
  }
}

/** The exchange was stopped by the proxy itself (undici reports it back as the call's error, which is then ignored). */
export class AbortedByProxy extends Error {
  override readonly name = 'AbortedByProxy';
  constructor() {
    super('the proxy stopped this upstream call');
  }
}

function bodyOf(chunks: Buffer[], length: number): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length);
}
