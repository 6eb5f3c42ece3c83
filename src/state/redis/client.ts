import { Cluster, type ChainableCommander } from 'ioredis';
import { ATTR_DB_OPERATION_NAME, ATTR_DB_SYSTEM_NAME } from '@opentelemetry/semantic-conventions';
import { activeTracing, inSpan, SpanKind } from '../../ops/tracing.js';
import { SessionStoreUnavailableError } from '../ports.js';
import type { StoreClient } from './connection.js';

/**
 * Runs groups of commands, each group's keys in one slot: one pipeline (one round trip)
 * on a single server, one pipeline per group on a Cluster, where a pipeline must not span
 * slots. A command's error (e.g. READONLY mid-failover) fails the whole call.
 */
export async function inSlots(client: StoreClient, groups: ReadonlyArray<(pipeline: ChainableCommander) => void>): Promise<void> {
  const pipelines = client instanceof Cluster ? groups.map(() => client.pipeline()) : [client.pipeline()];
  groups.forEach((group, i) => group(pipelines[Math.min(i, pipelines.length - 1)]!));
  const replies = await Promise.all(pipelines.map((pipeline) => pipeline.exec()));
  for (const [err] of replies.flatMap((reply) => reply ?? [])) if (err) throw err;
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
