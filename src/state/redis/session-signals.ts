import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { SessionSignal, SessionSignals } from '../ports.js';
import { deliver } from '../memory/session-signals.js';
import { storeCall } from './client.js';

/**
 * Signals for every replica through Redis pub/sub: one channel per key prefix, one
 * subscriber connection per replica (opened at the first subscriber). A replica also hears
 * its own signals through Redis, so delivery is one path for all.
 */
export class RedisSessionSignals implements SessionSignals {
  private readonly listeners = new Set<(signal: SessionSignal) => void>();
  private subscriber: Redis | undefined;
  private readonly channel: string;

  constructor(
    private readonly redis: Redis,
    keyPrefix: string,
    private readonly logger: FastifyBaseLogger,
  ) {
    this.channel = `${keyPrefix}session-signals`;
  }

  async publish(signal: SessionSignal): Promise<void> {
    await storeCall('session signal', () => this.redis.publish(this.channel, JSON.stringify(signal)));
  }

  subscribe(listener: (signal: SessionSignal) => void): () => void {
    this.listeners.add(listener);
    this.subscriber ??= this.listen();
    return () => this.listeners.delete(listener);
  }

  private listen(): Redis {
    const subscriber = this.redis.duplicate({ enableOfflineQueue: true });
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
