/**
 * Collapses concurrent calls with the same key into one: every caller gets the result
 * (or the error) of the call that was already running.
 */
export class SingleFlight<T> {
  private readonly running = new Map<string, Promise<T>>();

  /** `joined` tells the caller whether it waited on someone else's call. */
  async run(key: string, work: () => Promise<T>): Promise<{ value: T; joined: boolean }> {
    const existing = this.running.get(key);
    if (existing) return { value: await existing, joined: true };
    const promise = work().finally(() => this.running.delete(key));
    this.running.set(key, promise);
    return { value: await promise, joined: false };
  }

  /** The call running for this key, if any. */
  current(key: string): Promise<T> | undefined {
    return this.running.get(key);
  }

  get size(): number {
    return this.running.size;
  }
}
