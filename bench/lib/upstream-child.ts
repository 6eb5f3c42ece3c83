/**
 * The upstream API (test harness: verifies bearer tokens by introspection, with a
 * per-token cache so it is not the bottleneck) in a process of its own, as a real API would be.
 */
import { startUpstream, type Upstream } from '../../test/support/upstream.js';
import { serve } from './rpc.js';

let upstream: Upstream | undefined;

serve({
  async start(params: { introspectionEndpoint: string; clientId: string; clientSecret: string }) {
    upstream = await startUpstream({ ...params, cacheTokens: true });
    return { url: upstream.url };
  },
  stats() {
    return { introspectionCalls: upstream?.introspectionCalls() ?? 0 };
  },
  async stop() {
    await upstream?.close();
  },
});

// The harness records every request (headers included) for assertions; a benchmark sends
// hundreds of thousands, so empty the record often (the cost of recording stays, equal for all targets).
setInterval(() => {
  if (upstream) upstream.requests.length = 0;
}, 250).unref();
