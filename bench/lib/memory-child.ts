/**
 * Resident memory and heap of N sessions in the `memory` store, in a fresh process started
 * with --expose-gc (so nothing else lives in the heap): gc, measure, insert through
 * MemorySessionStore.set exactly as token-handler does, gc, measure.
 */
import { MemorySessionStore } from '../../src/state/memory/session-store.js';
import { payloadBytes, syntheticRecord, type TokenProfile } from './records.js';
import { serve } from './rpc.js';
import type { SessionRecord } from '../../src/state/record.js';

function collect(): void {
  const gc = globalThis.gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  gc();
}

function usage() {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers };
}

serve({
  /** Fills one store up to each of `counts` (cumulative) and measures at every step. */
  async measure(params: { template: SessionRecord; profile: TokenProfile; counts: number[]; ttlSeconds: number }) {
    const now = Date.now();
    const store = new MemorySessionStore(() => now);
    collect();
    const before = usage();
    const steps: Array<Record<string, number>> = [];
    let inserted = 0;
    let payload = 0;
    for (const count of params.counts) {
      const started = performance.now();
      for (; inserted < count; inserted++) {
        const record = syntheticRecord(params.template, inserted, params.profile, now);
        if (inserted < 1000) payload += payloadBytes(record);
        await store.create(record, params.ttlSeconds);
      }
      const insertMs = performance.now() - started;
      collect();
      const after = usage();
      steps.push({
        sessions: count,
        rss: after.rss,
        heapUsed: after.heapUsed,
        rssDelta: after.rss - before.rss,
        heapDelta: after.heapUsed - before.heapUsed,
        rssPerSession: (after.rss - before.rss) / count,
        heapPerSession: (after.heapUsed - before.heapUsed) / count,
        insertMs,
      });
    }
    const stored = await store.count();
    await store.close();
    return { profile: params.profile, before, steps, stored, jsonBytesPerRecord: payload / Math.min(1000, inserted) };
  },
});
