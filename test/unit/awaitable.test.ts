import { describe, expect, it } from 'vitest';
import { settle } from '../../src/awaitable.js';

/** What settle reported, once it has. */
function outcome<T>(step: () => T | Promise<T>): Promise<{ err: Error | null; value?: T; calls: number }> {
  return new Promise((resolve) => {
    let calls = 0;
    settle(step, (err, value) => {
      calls++;
      setTimeout(() => resolve({ err, value, calls }), 10);
    });
  });
}

describe('settle', () => {
  it('reports a value that is already there synchronously', () => {
    let seen: unknown;
    settle(() => 42, (_err, value) => (seen = value));
    expect(seen).toBe(42);
  });

  it('reports a value that arrives later, once', async () => {
    expect(await outcome(() => Promise.resolve('later'))).toEqual({ err: null, value: 'later', calls: 1 });
  });

  it('reports a throw and a rejection as the Error thrown', async () => {
    const boom = new Error('boom');
    expect((await outcome(() => { throw boom; })).err).toBe(boom);
    expect((await outcome(() => Promise.reject(boom))).err).toBe(boom);
  });

  it('reports a throw of undefined or a string as a failure, never as success', async () => {
    for (const thrown of [undefined, null, 'boom']) {
      const thrownNow = await outcome(() => { throw thrown; });
      expect(thrownNow.err).toBeInstanceOf(Error);
      const rejected = await outcome(() => Promise.reject(thrown));
      expect(rejected.err).toBeInstanceOf(Error);
      expect(rejected.calls).toBe(1);
    }
  });
});
