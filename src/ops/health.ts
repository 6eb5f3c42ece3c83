import type { FastifyInstance } from 'fastify';

export interface ReadinessCheck {
  name: string;
  /** Resolves true when ready; false or a rejection means not ready. */
  check: () => boolean | Promise<boolean>;
  /** What the body says about the dependency besides ok/failing (e.g. the Redis topology). */
  details?: () => Record<string, string | number>;
}

/** `/healthz`: the process answers. `/readyz`: every dependency check passes, with a body naming each. */
export async function healthRoutes(app: FastifyInstance, options: { checks: ReadinessCheck[] }): Promise<void> {
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    const results = await Promise.all(
      options.checks.map(async ({ name, check }) => {
        try {
          return [name, (await check()) ? 'ok' : 'failing'] as const;
        } catch {
          return [name, 'failing'] as const;
        }
      }),
    );
    const ready = results.every(([, status]) => status === 'ok');
    reply.code(ready ? 200 : 503).header('cache-control', 'no-store');
    const details = options.checks.filter((c) => c.details).map(({ name, details }) => [name, details!()] as const);
    return { status: ready ? 'ready' : 'not_ready', checks: Object.fromEntries(results), ...(details.length > 0 ? { details: Object.fromEntries(details) } : {}) };
  });
}
