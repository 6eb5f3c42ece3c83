import { Cluster } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { SessionSignal, SessionSignals } from '../ports.js';
import { deliver } from '../memory/session-signals.js';
import { storeCall } from './client.js';
import type { StoreClient } from './connection.js';

/**
 * Signals for every replica through Redis pub/sub: one channel per key prefix, one
 * subscriber connection per replica (opened at the first subscriber). A replica also hears
 * its own signals through Redis, so delivery is one path for all.
 */
export class RedisSessionSignals implements SessionSignals {
  private readonly listeners = new Set<(signal: SessionSignal) => void>();
  private subscriber: StoreClient | undefined;

  constructor(
    private readonly redis: StoreClient,
    private readonly channel: string,
    private readonly logger: FastifyBaseLogger,
  ) {}

  async publish(signal: SessionSignal): Promise<void> {
    await storeCall('session signal', () => this.redis.publish(this.channel, JSON.stringify(signal)));
  }

  tellThisReplica(signal: SessionSignal): void {
    deliver(this.listeners, signal);
  }

  subscribe(listener: (signal: SessionSignal) => void): () => void {
    this.listeners.add(listener);
    this.subscriber ??= this.listen();
    return () => this.listeners.delete(listener);
  }

  private listen(): StoreClient {
    // Queued until connected: the subscription is made once, whenever Redis answers.
    const subscriber = this.redis instanceof Cluster ? this.redis.duplicate(undefined, { enableOfflineQueue: true }) : this.redis.duplicate({ enableOfflineQueue: true });
    subscriber.on('error', (err: Error) => this.logger.warn({ err: err.message }, 'session signal subscriber: redis connection error'));
    subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.channel) return;
      let signal: SessionSignal;
      try {
        signal = JSON.parse(message) as SessionSignal;
      } catch {
        return;
      }
      deliver(this.listeners, signal);
    });
    // ioredis subscribes again by itself after a reconnect.
    subscriber.subscribe(this.channel).catch((err: unknown) => this.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'session signal subscription failed'));
    return subscriber;
  }

  close(): void {
    this.subscriber?.disconnect();
  }
}
