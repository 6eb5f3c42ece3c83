import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisServerInstalled, startSentinelGroup, warnRedisSkipped, type SentinelGroup } from './support/redis.js';
import { expectNothingLost, expectTopologyReported, failoverUnderLoad, refreshStorm, startReplicaPair, type ReplicaPair } from './support/redis-scenarios.js';

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/redis-sentinel.test.ts');

describe.runIf(hasRedis)('Redis behind Sentinel (master, replica, three Sentinels)', () => {
  let group: SentinelGroup;
  let pair: ReplicaPair;

  beforeAll(async () => {
    group = await startSentinelGroup();
    pair = await startReplicaPair({ sentinel: { name: group.name, nodes: group.sentinels } });
  }, 30_000);

  afterAll(async () => {
    await pair?.close();
    await group?.stop();
  });

  it('reports the topology in /readyz and /metrics', async () => {
    await expectTopologyReported(pair, 'sentinel');
  });

  it('two replicas, 200 parallel calls with an expired token: exactly one refresh', async () => {
    await refreshStorm(pair, 'sentinel-storm');
  });

  it('SENTINEL FAILOVER in the middle of load: 503s or successes, no session lost, no second refresh, service back by itself', async () => {
    const before = await group.masterPort();
    const figures = await failoverUnderLoad(
      pair,
      'sentinel',
      async () => {
        await group.failover();
        await group.untilMasterIsNot(before);
      },
      { untilReplicated: () => group.untilReplicated() },
    );
    expectNothingLost(figures);
    expect(figures.recoveryMs).toBeLessThan(20_000);
    const metrics = (await pair.a.app.metrics.exposition()).body;
    expect(metrics).toMatch(/token_handler_redis_failovers_total [1-9]/);
  }, 40_000);
});
