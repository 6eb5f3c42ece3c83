import type { FastifyRequest } from 'fastify';
import { describe, expect, it } from 'vitest';
import { isPageLoad } from '../../src/pages/page-load.js';

const request = (headers: Record<string, string>) => ({ headers }) as unknown as FastifyRequest;

describe('a page load or a script call', () => {
  it.each([
    ['a link followed in a current browser', { 'sec-fetch-mode': 'navigate', accept: 'text/html,*/*;q=0.8' }],
    ['a form posted in a current browser', { 'sec-fetch-mode': 'navigate', accept: '*/*' }],
    ['an older browser loading a page', { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' }],
  ])('%s gets a page', (_name, headers) => {
    expect(isPageLoad(request(headers))).toBe(true);
  });

  it.each([
    ['fetch in a current browser, even asking for HTML', { 'sec-fetch-mode': 'cors', accept: 'text/html' }],
    ['a script tag', { 'sec-fetch-mode': 'no-cors', accept: '*/*' }],
    ['a client asking for JSON first', { accept: 'application/json, text/html' }],
    ['curl', { accept: '*/*' }],
    ['a client that says nothing', {}],
  ])('%s gets JSON', (_name, headers) => {
    expect(isPageLoad(request(headers))).toBe(false);
  });
});
