import { sealData, unsealData } from 'iron-session';
import { describe, expect, it } from 'vitest';
import { ironSeal, ironUnseal } from '../../src/state/iron.js';

// iron-session 8 is the reference for the seal format: cookies sealed before token-handler
// sealed on node:crypto must keep opening, and the other way round.
const SECRET = 'a-secret-of-at-least-thirty-two-characters-0001';
const OTHER = 'another-secret-of-at-least-thirty-two-chars-0002';
const ID = '4242';
const record = { id: 'abc', accessToken: 'x'.repeat(900), claims: { sub: 'jane', name: 'Jane Doe', groups: ['a', 'ü', '日本'] }, lastSeenAt: 1 };

const theirs = (data: object, ttlSeconds: number, id = ID, secret = SECRET) => sealData(data as Record<string, unknown>, { password: { [id]: secret }, ttl: ttlSeconds });
// iron-session answers {} for most bad seals and throws for the rest (e.g. a wrong prefix).
const theyRead = async (sealed: string, passwords: Record<string, string> = { [ID]: SECRET }) => {
  const data = (await unsealData(sealed, { password: passwords, ttl: 60 }).catch(() => ({}))) as object;
  return Object.keys(data).length === 0 ? undefined : data;
};
const flip = (sealed: string, at: number) => sealed.slice(0, at) + (sealed[at] === 'A' ? 'B' : 'A') + sealed.slice(at + 1);

describe('seals in iron-session 8 format', () => {
  it('opens what iron-session sealed', async () => {
    expect(ironUnseal(await theirs(record, 3600), { [ID]: SECRET })).toEqual(record);
  });

  it('seals what iron-session opens', async () => {
    expect(await theyRead(ironSeal(record, { id: ID, secret: SECRET }, 3_600_000))).toEqual(record);
  });

  it('opens a seal made with any of several secrets, by the id the seal names', async () => {
    const sealed = await theirs(record, 3600, '7', OTHER);
    expect(ironUnseal(sealed, { [ID]: SECRET, 7: OTHER })).toEqual(record);
    expect(ironUnseal(sealed, { [ID]: SECRET })).toBeUndefined();
  });

  it('refuses a seal with another secret under the right id, as iron-session does', async () => {
    const sealed = ironSeal(record, { id: ID, secret: OTHER }, 3_600_000);
    expect(ironUnseal(sealed, { [ID]: SECRET })).toBeUndefined();
    expect(await theyRead(sealed)).toBeUndefined();
  });

  it('refuses every tampered character before the version suffix, as iron-session does', async () => {
    const sealed = ironSeal({ sid: 'short' }, { id: ID, secret: SECRET }, 3_600_000);
    const end = sealed.lastIndexOf('~');
    for (let at = 0; at < end; at += 3) {
      const tampered = flip(sealed, at);
      if (tampered === sealed) continue;
      expect(ironUnseal(tampered, { [ID]: SECRET })).toBeUndefined();
      expect(await theyRead(tampered)).toBeUndefined();
    }
  });

  it('refuses a seal past its expiration and the minute of clock skew iron allows', () => {
    const now = Date.now();
    const sealed = ironSeal(record, { id: ID, secret: SECRET }, 1000, now);
    expect(ironUnseal(sealed, { [ID]: SECRET }, now + 60_000)).toEqual(record);
    expect(ironUnseal(sealed, { [ID]: SECRET }, now + 61_001)).toBeUndefined();
  });

  it('refuses an iron-session seal that expired', async () => {
    const sealed = await theirs(record, 1);
    expect(ironUnseal(sealed, { [ID]: SECRET }, Date.now() + 62_000)).toBeUndefined();
  });

  it('refuses truncated, suffix-less and foreign text without throwing', async () => {
    const sealed = ironSeal(record, { id: ID, secret: SECRET }, 3_600_000);
    for (const text of [sealed.slice(0, -10), sealed.slice(0, sealed.lastIndexOf('~')), sealed.replace('~2', '~1'), 'Fe26.2*1*2*3*4*5*6*7~2', '', '~2', 'not a seal', '*******~2']) {
      expect(ironUnseal(text, { [ID]: SECRET })).toBeUndefined();
    }
    // Password ids are looked up as own keys only.
    expect(ironUnseal(sealed.replace(`*${ID}*`, '*constructor*'), { [ID]: SECRET })).toBeUndefined();
  });

  it('reads the version after the first ~ as iron-session does (what follows is outside the MAC)', async () => {
    const sealed = ironSeal(record, { id: ID, secret: SECRET }, 3_600_000);
    expect(ironUnseal(`${sealed}~junk`, { [ID]: SECRET })).toEqual(record);
    expect(await theyRead(`${sealed}~junk`)).toEqual(record);
  });

  it('refuses short secrets and password ids iron cannot carry', () => {
    expect(() => ironSeal(record, { id: ID, secret: 'short' }, 1000)).toThrow(/too short/);
    expect(() => ironSeal(record, { id: 'a*b', secret: SECRET }, 1000)).toThrow(/password id/);
  });
});
