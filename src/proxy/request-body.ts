import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { BrowserError } from '../errors.js';

/** A request body small enough to be kept, so the request can be replayed after a 401. */
export class ReplayableBody {
  constructor(readonly bytes: Buffer) {}
}

/** Passes a streamed body through, failing it once it grows past the limit. */
export class BodyLimit extends Transform {
  private seen = 0;
  exceeded = false;

  constructor(private readonly limit: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      this.exceeded = true;
      callback(new Error('request body over the limit'));
      return;
    }
    callback(null, chunk);
  }
}

export interface BodyPolicy {
  /** Largest body streamed to an upstream (413 beyond). */
  limitBytes: number;
  /** Bodies up to this size are kept for a replay after a 401; -1 when the route never replays. */
  replayLimitBytes: number;
}

/**
 * What the proxy sends upstream as the request body: a kept copy when it is small
 * enough to replay, else the stream itself (counted against the limit when its length is
 * not announced). An announced length over the limit is refused before a byte is read.
 */
export function readBody(request: FastifyRequest, payload: Readable, policy: BodyPolicy, done: (err: Error | null, body?: unknown) => void): void {
  const length = Number(request.headers['content-length']);
  if (Number.isSafeInteger(length) && length > policy.limitBytes) {
    done(bodyTooLarge(policy.limitBytes), undefined);
    return;
  }
  if (!Number.isSafeInteger(length)) {
    done(null, payload.pipe(new BodyLimit(policy.limitBytes)));
    return;
  }
  if (length > policy.replayLimitBytes) {
    done(null, payload);
    return;
  }
  const chunks: Buffer[] = [];
  payload.on('data', (chunk: Buffer) => chunks.push(chunk));
  payload.on('end', () => done(null, new ReplayableBody(Buffer.concat(chunks))));
  payload.on('error', (err) => done(err, undefined));
}

/** The body sent upstream: a kept body from memory (it can be sent again), else the stream itself, or none. */
export function upstreamBodyOf(request: FastifyRequest): Buffer | Readable | null {
  const body = request.body;
  if (body instanceof ReplayableBody) return body.bytes;
  return body instanceof Readable ? body : null;
}

/** Whether the request can be sent again: it had no body, or the body was kept. */
export function isReplayable(request: FastifyRequest): boolean {
  return request.body === undefined || request.body === null || request.body instanceof ReplayableBody;
}

/** Whether the body stream was cut off at the limit (the upstream then saw a broken body). */
export function bodyExceeded(request: FastifyRequest): boolean {
  return request.body instanceof BodyLimit && request.body.exceeded;
}

export function bodyTooLarge(limit: number): BrowserError {
  return new BrowserError('payload_too_large', `The request body is larger than ${limit} bytes.`);
}
