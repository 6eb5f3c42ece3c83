import { describe, expect, it } from 'vitest';
import { Sealer } from '../../src/state/sealer.js';

const OLD = 'old-secret-old-secret-old-secret-0001';
const NEW = 'new-secret-new-secret-new-secret-0002';

describe('sealing with rotated secrets', () => {
  it('opens a value sealed with the old secret after a new one is put first', async () => {
    const sealed = await new Sealer([OLD]).seal({ a: 1 }, 60);
    expect(new Sealer([NEW, OLD]).unseal(sealed)).toEqual({ a: 1 });
  });

  it('seals with the first secret only', async () => {
    const sealed = await new Sealer([NEW, OLD]).seal({ a: 1 }, 60);
    expect(new Sealer([NEW]).unseal(sealed)).toEqual({ a: 1 });
    expect(new Sealer([OLD]).unseal(sealed)).toBeNull();
  });

  it('treats tampered, truncated and foreign seals as nothing', async () => {
    const sealer = new Sealer([NEW]);
    const sealed = await sealer.seal({ a: 1 }, 60);
    const flipped = sealed.slice(0, 40) + (sealed[40] === 'A' ? 'B' : 'A') + sealed.slice(41);
    expect(sealer.unseal(flipped)).toBeNull();
    expect(sealer.unseal(sealed.slice(0, sealed.length - 10))).toBeNull();
    expect(sealer.unseal('not a seal at all')).toBeNull();
    expect(sealer.unseal('')).toBeNull();
  });
});

describe('the unseal cache', () => {
  it('opens a seal once and serves repeats from memory until the entry expires', async () => {
    let now = 0;
    const sealer = new Sealer([NEW], { cacheEntries: 10, cacheTtlMs: 1000, now: () => now });
    const sealed = await sealer.seal({ a: 1 }, 60);
    const first = await sealer.unseal(sealed);
    expect(await sealer.unseal(sealed)).toBe(first);
    now = 1000;
    const reopened = await sealer.unseal(sealed);
    expect(reopened).toEqual({ a: 1 });
    expect(reopened).not.toBe(first);
  });

  it('remembers a seal no longer than the seal itself lives, so an expired cookie goes back to iron', async () => {
    let now = Date.now();
    const sealer = new Sealer([NEW], { cacheEntries: 10, now: () => now });
    const sealed = await sealer.seal({ a: 1 }, 60);
    const first = await sealer.unseal(sealed);
    now += 59_000;
    expect(sealer.unseal(sealed)).toBe(first);
    now += 2_000;
    const reopened = sealer.unseal(sealed);
    expect(reopened).toEqual({ a: 1 });
    expect(reopened).not.toBe(first);
  });

  it('never remembers a seal that failed to open', async () => {
    const sealer = new Sealer([NEW], { cacheEntries: 10 });
    const foreign = await new Sealer([OLD]).seal({ a: 1 }, 60);
    expect(await sealer.unseal(foreign)).toBeNull();
    expect(await new Sealer([NEW, OLD], { cacheEntries: 10 }).unseal(foreign)).toEqual({ a: 1 });
    expect(await sealer.unseal(foreign)).toBeNull();
  });

  it('knows a cookie it sealed itself: the browser presenting it costs no unseal', async () => {
    const sealer = new Sealer([NEW], { cacheEntries: 10 });
    const data = { a: 1 };
    const sealed = await sealer.seal(data, 60, true);
    expect(sealer.unseal(sealed)).toBe(data);
  });
});
