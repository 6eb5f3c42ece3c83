/**
 * The upstream API (test harness: verifies bearer tokens by introspection, with a
 * per-token cache so it is not the bottleneck) in a process of its own, as a real API would be.
 *
 * Or (`startCheap`) an upstream that does no work: a fixed small JSON answer, keep-alive,
 * so that what a proxy in front of it costs shows. And (`startOtlpSink`) a tiny OTLP/HTTP
 * receiver that reads and drops what it gets and answers 200 (tracing on, in the bench).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startUpstream, type Upstream } from '../../test/support/upstream.js';
import { serve } from './rpc.js';

let upstream: Upstream | undefined;
const servers: Server[] = [];
let otlpRequests = 0;
let otlpBytes = 0;

const CHEAP_BODY = Buffer.from(JSON.stringify({ items: [{ id: 1, name: 'first' }, { id: 2, name: 'second' }, { id: 3, name: 'third' }] }));
const CHEAP_HEADERS = { 'content-type': 'application/json', 'content-length': CHEAP_BODY.length };

async function listenLocal(server: Server): Promise<string> {
  // Longer than the proxies' own idle timeouts for their upstream pools: they close first.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

serve({
  async start(params: { introspectionEndpoint: string; clientId: string; clientSecret: string }) {
    upstream = await startUpstream({ ...params, cacheTokens: true });
    return { url: upstream.url };
  },
  /** 200 and a fixed 84-byte JSON body for any request, nothing checked. */
  async startCheap() {
    const server = createServer((req, res) => {
      req.resume();
      // The bench's wrk script tells its sessions apart by this echo (bench/lib/wrk-sessions.lua).
      const session = req.headers['x-bench-session'];
      res.writeHead(200, session === undefined ? CHEAP_HEADERS : { ...CHEAP_HEADERS, 'x-bench-session': session });
      res.end(CHEAP_BODY);
    });
    return { url: await listenLocal(server) };
  },
  async startOtlpSink() {
    const server = createServer((req, res) => {
      otlpRequests++;
      req.on('data', (chunk: Buffer) => (otlpBytes += chunk.length));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    return { url: await listenLocal(server) };
  },
  otlpStats() {
    return { requests: otlpRequests, bytes: otlpBytes };
  },
  stats() {
    return { introspectionCalls: upstream?.introspectionCalls() ?? 0 };
  },
  async stop() {
    for (const server of servers) {
      server.closeAllConnections();
      server.close();
    }
    await upstream?.close();
  },
});

// The harness records every request (headers included) for assertions; a benchmark sends
// hundreds of thousands, so empty the record often (the cost of recording stays, equal for all targets).
setInterval(() => {
  if (upstream) upstream.requests.length = 0;
}, 250).unref();
