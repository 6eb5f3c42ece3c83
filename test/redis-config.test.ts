import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config/index.js';
import { KeyLayout } from '../src/state/redis/keys.js';
import { parseNode } from '../src/state/redis/connection.js';

const SECRET = 'a-session-secret-that-is-long-enough-0123456789';

function withRedis(redis: Record<string, unknown> | undefined, store = 'redis'): Record<string, unknown> {
  return {
    publicUrl: 'https://app.example.com',
    oidc: { issuer: 'https://idp.example.com', clientId: 'bff', clientSecret: 'client-secret' },
    session: { secrets: [SECRET], store, ...(redis ? { redis } : {}) },
  };
}

function problemsOf(input: Record<string, unknown>, env: Record<string, string> = {}): string[] {
  try {
    parseConfig(input, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError, but the configuration was accepted');
}

describe('session.redis: url, sentinel or cluster, ACL and TLS', () => {
  it('takes a Sentinel group and a Cluster from the environment (lists comma-separated)', () => {
    const sentinel = parseConfig(withRedis(undefined), {
      TH_SESSION_REDIS_SENTINEL_NAME: 'mymaster',
      TH_SESSION_REDIS_SENTINEL_NODES: 's1:26379, s2:26379,[::1]:26380',
      TH_SESSION_REDIS_USERNAME: 'th',
      TH_SESSION_REDIS_PASSWORD: 'pw',
    });
    expect(sentinel.session.redis).toEqual({
      sentinel: { name: 'mymaster', nodes: ['s1:26379', 's2:26379', '[::1]:26380'] },
      username: 'th',
      password: 'pw',
      keyPrefix: 'th:',
      localCacheEntries: 20_000,
    });
    const cluster = parseConfig(withRedis(undefined), { TH_SESSION_REDIS_CLUSTER_NODES: 'r1:6379,r2:6379' });
    expect(cluster.session.redis?.cluster).toEqual({ nodes: ['r1:6379', 'r2:6379'] });
  });

  it('needs exactly one of url, sentinel or cluster', () => {
    expect(problemsOf(withRedis({ keyPrefix: 'x:' }))).toEqual([
      'session.redis.url: is missing; session.redis needs one of url (one server), sentinel or cluster (e.g. url: redis://127.0.0.1:6379)',
    ]);
    expect(problemsOf(withRedis({ url: 'redis://r:6379', cluster: { nodes: ['r:6379'] } }))).toEqual([
      'session.redis.cluster: is set as well as session.redis.url; expected only one of url, sentinel or cluster',
    ]);
  });

  it('refuses nodes that are not host:port, a tls block beside a plain redis:// URL, a CA file that does not exist, braces in the prefix', () => {
    expect(problemsOf(withRedis({ sentinel: { name: 'm', nodes: ['s1'] } }))).toEqual(['session.redis.sentinel.nodes[0]: is "s1"; expected host:port, e.g. redis-1.internal:26379']);
    expect(problemsOf(withRedis({ url: 'redis://r:6379', tls: {} }))).toEqual([
      'session.redis.tls: is set but session.redis.url is redis:// (plain); expected a rediss:// URL for TLS, or no tls block',
    ]);
    expect(problemsOf(withRedis({ cluster: { nodes: ['r:6379'] }, tls: { caFile: '/nonexistent/ca.pem' } }))[0]).toMatch(/^session\.redis\.tls\.caFile: is "\/nonexistent\/ca.pem", which does not exist/);
    expect(problemsOf(withRedis({ url: 'redis://r:6379', keyPrefix: 'th:{x}' }))[0]).toMatch(/^session\.redis\.keyPrefix: /);
  });

  it('never echoes the password or a URL with credentials', () => {
    const leaked = 'hunter2-do-not-print';
    const lines = problemsOf(withRedis({ url: `http://u:${leaked}@r:6379`, password: 42 }), { TH_SESSION_REDIS_PASSWORD: '' });
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('\n')).not.toContain(leaked);
    expect(problemsOf(withRedis({ sentinel: { name: 'm', nodes: ['s:1'] }, password: [leaked] })).join('\n')).not.toContain(leaked);
  });
});

describe('the key layout', () => {
  it('keeps the names of earlier versions on one server or Sentinel, and tags every key on a Cluster', () => {
    const plain = new KeyLayout('th:', false);
    expect([plain.session('S'), plain.index('sub', 'U'), plain.refreshLock('H'), plain.refreshResult('H'), plain.deny('sid', 'P')]).toEqual([
      'th:session:S',
      'th:sub:U',
      'th:refresh:lock:H',
      'th:refresh:result:H',
      'th:deny:sid:P',
    ]);
    const tagged = new KeyLayout('th:', true);
    expect([tagged.session('S'), tagged.index('sid', 'P'), tagged.refreshLock('H'), tagged.refreshResult('H'), tagged.seen('J')]).toEqual([
      'th:session:{S}',
      'th:sid:{P}',
      'th:refresh:lock:{H}',
      'th:refresh:result:{H}',
      'th:seen:{J}',
    ]);
  });

  it('reads host:port nodes, IPv6 in brackets', () => {
    expect(parseNode('redis-1.internal:26379')).toEqual({ host: 'redis-1.internal', port: 26379 });
    expect(parseNode('[::1]:6380')).toEqual({ host: '::1', port: 6380 });
  });
});
