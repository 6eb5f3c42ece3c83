import type { FastifyInstance } from 'fastify';
import { BrowserError } from '../errors.js';
import { sendError } from '../failures.js';

export interface ReadinessCheck {
  name: string;
  /** Resolves true when ready; false or a rejection means not ready. */
  check: () => boolean | Promise<boolean>;
  /** What the body says about the dependency besides ok/failing (e.g. the Redis topology). */
  details?: () => Record<string, string | number>;
}

/** The checks of one app (its provider). */
export interface AppReadiness {
  name: string;
  checks: ReadinessCheck[];
  /** Whether the app can serve at all (its provider's metadata loaded): what the process's own status counts. */
  started: () => boolean;
}

export interface HealthOptions {
  /** Checks of the process (shutdown, the session store). */
  checks: ReadinessCheck[];
  /** Checks of each app. */
  apps: AppReadiness[];
  /** Several apps (apps:): the body reports each, and one app not ready leaves the process ready. */
  several: boolean;
}

type Status = 'ok' | 'failing';

async function run(checks: readonly ReadinessCheck[]): Promise<Array<readonly [string, Status]>> {
  return Promise.all(
    checks.map(async ({ name, check }) => {
      try {
        return [name, (await check()) ? 'ok' : 'failing'] as const;
      } catch {
        return [name, 'failing'] as const;
      }
    }),
  );
}

const allOk = (results: ReadonlyArray<readonly [string, Status]>) => results.every(([, status]) => status === 'ok');

/**
 * `/healthz`: the process answers. `/readyz`: every dependency check passes, with a body
 * naming each. With several apps, `/readyz` is 200 while the process's checks pass and at
 * least one app has started (its provider's metadata loaded): a provider down must not take
 * the other apps, or the sessions that still work, out of the load balancer. The body says
 * which app is not ready (its provider not answering now), and `/readyz?app=<name>`
 * answers for that app alone (503 while it is not ready).
 */
export async function healthRoutes(app: FastifyInstance, options: HealthOptions): Promise<void> {
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get<{ Querystring: { app?: string } }>('/readyz', async (request, reply) => {
    const only = typeof request.query.app === 'string' ? request.query.app : undefined;
    const apps = only === undefined ? options.apps : options.apps.filter((one) => one.name === only);
    if (apps.length === 0) return sendError(reply, new BrowserError('not_found', `No app is named ${JSON.stringify(only)}.`));
    const [own, perApp] = await Promise.all([run(options.checks), Promise.all(apps.map((one) => run(one.checks)))]);
    const details = options.checks.filter((c) => c.details).map(({ name, details }) => [name, details!()] as const);
    const detailsPart = details.length > 0 ? { details: Object.fromEntries(details) } : {};
    reply.header('cache-control', 'no-store');
    if (!options.several) {
      // One app: its checks and the process's side by side, as they have always been.
      const results = [...perApp[0]!, ...own];
      const ready = allOk(results);
      reply.code(ready ? 200 : 503);
      return { status: ready ? 'ready' : 'not_ready', checks: Object.fromEntries(results), ...detailsPart };
    }
    const readyApps = perApp.map(allOk);
    const ready = allOk(own) && (only === undefined ? apps.some((one) => one.started()) : readyApps[0]!);
    reply.code(ready ? 200 : 503);
    return {
      status: ready ? 'ready' : 'not_ready',
      checks: Object.fromEntries(own),
      apps: Object.fromEntries(apps.map((one, i) => [one.name, { status: readyApps[i] ? 'ready' : 'not_ready', checks: Object.fromEntries(perApp[i]!) }])),
      ...detailsPart,
    };
  });
}
