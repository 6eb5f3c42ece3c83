import { describe, expect, it } from 'vitest';
import { BoundedTtlCache } from '../../src/state/bounded-cache.js';
import { SingleFlight } from '../../src/tokens/single-flight.js';

describe('remembered refresh results', () => {
  it('are forgotten after their time to live', () => {
    let now = 0;
    const cache = new BoundedTtlCache<string>(10, 1000, () => now);
    cache.set('k', 'v');
    now = 999;
    expect(cache.get('k')).toBe('v');
    now = 1000;
    expect(cache.get('k')).toBeUndefined();
  });

  it('never hold more than their bound, dropping the oldest first', () => {
    const cache = new BoundedTtlCache<number>(3, 60_000, () => 0);
    for (let i = 0; i < 5; i++) cache.set(`k${i}`, i);
    expect(cache.size).toBe(3);
    expect(cache.get('k0')).toBeUndefined();
    expect(cache.get('k1')).toBeUndefined();
    expect(cache.get('k4')).toBe(4);
  });
});

describe('single-flight', () => {
  it('runs concurrent calls with one key once and gives every caller the result', async () => {
    const flights = new SingleFlight<number>();
    let calls = 0;
    let release!: (n: number) => void;
    const work = () => {
      calls++;
      return new Promise<number>((resolve) => (release = resolve));
    };
    const all = Promise.all(Array.from({ length: 50 }, () => flights.run('rt', work)));
    release(7);
    const results = await all;
    expect(calls).toBe(1);
    expect(results.every((r) => r.value === 7)).toBe(true);
    expect(results.filter((r) => !r.joined)).toHaveLength(1);
  });

  it('shares a failure with every waiter and lets the next call try again', async () => {
    const flights = new SingleFlight<number>();
    const failing = flights.run('rt', () => Promise.reject(new Error('down')));
    const joined = flights.run('rt', () => Promise.resolve(1));
    await expect(failing).rejects.toThrow('down');
    await expect(joined).rejects.toThrow('down');
    await expect(flights.run('rt', () => Promise.resolve(2))).resolves.toEqual({ value: 2, joined: false });
  });
});
