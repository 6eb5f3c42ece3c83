// A token-handler (or the bare proxy) from the compiled dist/, in plain JavaScript, for
// bench/instructions.ts: it runs under valgrind, where starting tsx (and its esbuild
// service) would cost minutes. The bare proxy is the same as bench/lib/stack.ts's.
import { buildApp } from '../../dist/app.js';
import { parseConfig } from '../../dist/config/load.js';
import { logDestination } from '../../dist/ops/log-destination.js';
import Fastify from 'fastify';
import httpProxy from '@fastify/http-proxy';

const spec = JSON.parse(process.env.PLAIN_SERVER);
let app;
if (spec.kind === 'bare') {
  app = Fastify({ logger: false });
  const authorization = `Bearer ${spec.bearer}`;
  await app.register(httpProxy, {
    upstream: spec.upstreamUrl,
    prefix: '/api',
    rewritePrefix: '',
    replyOptions: {
      rewriteRequestHeaders: (_request, headers) => {
        delete headers.cookie;
        headers.authorization = authorization;
        return headers;
      },
    },
  });
} else {
  app = await buildApp(parseConfig(spec.config), { logStream: logDestination('/dev/null', true), waitForProvider: true });
}
await app.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write(`${JSON.stringify({ port: app.server.address().port })}\n`);
process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
