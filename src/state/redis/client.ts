import { Redis, type RedisOptions } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { ATTR_DB_OPERATION_NAME, ATTR_DB_SYSTEM_NAME } from '@opentelemetry/semantic-conventions';
import { activeTracing, inSpan, SpanKind } from '../../ops/tracing.js';
import { SessionStoreUnavailableError } from '../ports.js';

/**
 * One ioredis connection, configured to fail fast while Redis is away (no offline
 * queue, one retry), so requests get a prompt 503 instead of hanging, and to reconnect
 * by itself so service resumes when Redis returns.
 */
export function createRedis(url: string, logger: FastifyBaseLogger, extra: RedisOptions = {}): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    commandTimeout: 2000,
    retryStrategy: (attempt) => Math.min(100 * attempt, 2000),
    // Concurrent requests' reads share one round trip: one per request otherwise.
    enableAutoPipelining: true,
    ...extra,
  });
  let down = false;
  redis.on('error', (err: Error) => {
    if (!down) logger.error({ err: err.message }, 'redis connection error');
    down = true;
  });
  redis.on('ready', () => {
    if (down) logger.info('redis connection restored');
    down = false;
  });
  return redis;
}

/** Runs a Redis operation (in a span while tracing is on); any failure becomes SessionStoreUnavailableError. */
export async function storeCall<T>(operation: string, call: () => Promise<T>): Promise<T> {
  try {
    return await (activeTracing() ? inSpan(`redis ${operation}`, SpanKind.CLIENT, storeSpanAttributes(operation), call) : call());
  } catch (err) {
    throw new SessionStoreUnavailableError(operation, { cause: err });
  }
}

/** What a store span says: our operation's name (never a key: keys hold session ids and token hashes). */
function storeSpanAttributes(operation: string) {
  return { [ATTR_DB_SYSTEM_NAME]: 'redis', [ATTR_DB_OPERATION_NAME]: operation };
}
