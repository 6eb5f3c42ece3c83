import type { SessionSignal, SessionSignals } from '../ports.js';

/** Signals within this process: one replica. */
export class MemorySessionSignals implements SessionSignals {
  private readonly listeners = new Set<(signal: SessionSignal) => void>();

  async publish(signal: SessionSignal): Promise<void> {
    deliver(this.listeners, signal);
  }

  tellThisReplica(signal: SessionSignal): void {
    deliver(this.listeners, signal);
  }

  subscribe(listener: (signal: SessionSignal) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** Hands a signal to each listener; one listener's failure never keeps it from the others. */
export function deliver(listeners: Iterable<(signal: SessionSignal) => void>, signal: SessionSignal): void {
  for (const listener of listeners) {
    try {
      listener(signal);
    } catch {
      // A listener's own fault (a stream already closed): the others still hear it.
    }
  }
}
