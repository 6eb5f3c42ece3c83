import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisServerInstalled, startTlsRedisServer, warnRedisSkipped, type TlsRedisServer } from './support/redis.js';
import { expectNothingLost, expectTopologyReported, failoverUnderLoad, refreshStorm, startReplicaPair, type ReplicaPair } from './support/redis-scenarios.js';
import { startBff } from './support/bff.js';

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/redis-tls.test.ts');

describe.runIf(hasRedis)('Redis over TLS with an ACL user (rediss://, tls.caFile, username, password)', () => {
  let server: TlsRedisServer;
  let pair: ReplicaPair;

  beforeAll(async () => {
    server = await startTlsRedisServer();
    pair = await startReplicaPair({ url: server.url, username: server.username, password: server.password, tls: { caFile: server.caFile } });
  }, 30_000);

  afterAll(async () => {
    await pair?.close();
    await server?.stop();
  });

  it('connects as the ACL user, trusting the configured CA only; never logs the password', async () => {
    await expectTopologyReported(pair, 'single');
    expect(JSON.stringify(pair.a.logs)).not.toContain(server.password);
  });

  it('without the CA, or with a wrong password, the store stays unavailable, and the logs show neither password nor URL credentials', async () => {
    const base = { oidc: { issuer: pair.provider.issuer, clientId: pair.provider.clients.basic.clientId, clientSecret: pair.provider.clients.basic.clientSecret } };
    const wrongPassword = 'not-the-password-1234';
    for (const redis of [
      { url: server.url, username: server.username, password: server.password },
      { url: server.url.replace('rediss://', `rediss://${server.username}:${wrongPassword}@`), tls: { caFile: server.caFile } },
    ]) {
      const bff = await startBff({ ...base, session: { store: 'redis', secrets: ['x'.repeat(40)], redis } });
      try {
        await new Promise((resolve) => setTimeout(resolve, 500));
        const ready = await bff.app.inject('/readyz');
        expect(ready.statusCode).toBe(503);
        expect(ready.json().checks.session_store).toBe('failing');
        const logs = JSON.stringify(bff.logs);
        expect(logs).not.toContain(server.password);
        expect(logs).not.toContain(wrongPassword);
      } finally {
        await bff.app.close();
      }
    }
  });

  it('two replicas, 200 parallel calls with an expired token: exactly one refresh', async () => {
    await refreshStorm(pair, 'tls-storm');
  });

  it('a restart of the server in the middle of load (one server: an outage, not a failover): 503s or successes, no session lost, no second refresh', async () => {
    const figures = await failoverUnderLoad(pair, 'tls', () => server.restart(500));
    expectNothingLost(figures);
    expect(figures.recoveryMs).toBeLessThan(10_000);
    expect((await pair.a.app.metrics.exposition()).body).toMatch(/token_handler_redis_reconnects_total [1-9]/);
  }, 40_000);
});
