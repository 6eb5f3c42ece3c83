import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { UpstreamBody, UpstreamError, UpstreamResponse } from './upstream-exchange.js';

export interface WholeBodyEvents {
  /** The response was ready but the browser had gone. */
  browserLeft(request: FastifyRequest, reply: FastifyReply): void;
  /** The body failed before anything reached the browser (a reset, a body timeout). */
  failed(reply: FastifyReply, error: UpstreamError): void;
}

/**
 * Whether a response is read whole before it is passed on: it announces a body of at most
 * `limit` bytes. The browser then gets it in one write, which costs the proxy less than
 * piping a stream (no pipeline, no stream listeners, no write per chunk), and a body
 * that fails halfway becomes a clean 502/504 instead of a cut-off 200. Responses without
 * a length (streams, server-sent events) and longer ones stream as they come.
 */
export function fitsBuffer(request: FastifyRequest, res: UpstreamResponse, limit: number): boolean {
  // HEAD, 204 and 304 carry no body, whatever Content-Length says: passed on as they are.
  if (limit === 0 || request.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) return false;
  // Sent as a Buffer, a body without a type would get Fastify's application/octet-stream.
  if (res.headers['content-type'] === undefined) return false;
  const length = res.headers['content-length'];
  return typeof length === 'string' && /^\d+$/.test(length) && Number(length) <= limit;
}

/**
 * Gathers a small upstream body, then sends it in one write (see fitsBuffer): a body that
 * came in one read is sent as that very Buffer.
 */
export function passWhole(request: FastifyRequest, reply: FastifyReply, res: UpstreamResponse, events: WholeBodyEvents): void {
  // A browser that leaves frees the upstream connection at once, as a piped stream would.
  (reply.raw as BufferingResponse)[kBufferingBody] = res.body;
  reply.raw.on('close', abandonBufferingBody);
  res.body.readWhole((error, body) => {
    if (error) {
      // Also what a browser that left leads to: abandonBufferingBody stops the exchange.
      try {
        // Nothing has reached the browser yet: a clean error instead of half a body.
        dropUpstreamHeaders(reply, res.headers);
        events.failed(reply, error);
      } catch (sendError) {
        reply.log.error({ err: sendError }, 'answering for a failed upstream response failed');
        abandonBrowser(reply);
      }
      return;
    }
    try {
      if (reply.raw.destroyed) events.browserLeft(request, reply);
      else reply.send(body);
    } catch (err) {
      reply.log.error({ err }, 'passing on a buffered upstream response failed');
      abandonBrowser(reply);
    }
  });
}

/** Takes the upstream's headers off the reply before token-handler answers in its place. */
export function dropUpstreamHeaders(reply: FastifyReply, headers: Record<string, unknown>): void {
  for (const name of Object.keys(headers)) reply.removeHeader(name);
}

const kBufferingBody = Symbol('upstream body being read whole');
type BufferingResponse = ServerResponse & { [kBufferingBody]?: UpstreamBody };

/**
 * The browser's response closed: if before it was sent, stop reading the upstream's body.
 * One shared function rather than a closure per request, the body found on the response.
 */
function abandonBufferingBody(this: BufferingResponse): void {
  if (!this.writableFinished) this[kBufferingBody]?.abort();
}

/** Nothing could be sent: close the browser's connection rather than leave it waiting for a timeout. */
function abandonBrowser(reply: FastifyReply): void {
  if (!reply.raw.writableFinished) reply.raw.destroy();
}
