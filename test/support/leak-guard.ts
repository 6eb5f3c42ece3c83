/**
 * The leak guard (vitest setup file, runs in every test file): after a file's tests,
 * every token the file's providers issued is looked for in everything the browser side
 * received (bodies, headers, cookie values) and in every log line token-handler wrote.
 * One hit fails the file.
 */
import { afterAll } from 'vitest';
import { browsers, startedBffs } from './bff.js';
import { startedProviders } from './provider.js';

afterAll(() => {
  const tokens = [...new Set(startedProviders.flatMap((provider) => provider.issuedTokens()))].filter((t) => t.length >= 16);
  if (tokens.length === 0) return;
  const leaks: string[] = [];
  startedBffs.forEach((bff, i) => {
    const logs = bff.logText();
    for (const token of tokens) if (logs.includes(token)) leaks.push(`token-handler #${i} logged a token (${token.slice(0, 8)}…) in: ${context(logs, token)}`);
  });
  browsers.forEach((browser, i) => {
    const received = browser.received();
    for (const token of tokens) if (received.includes(token)) leaks.push(`browser #${i} received a token (${token.slice(0, 8)}…) in: ${context(received, token)}`);
  });
  if (leaks.length > 0) throw new Error(`leak guard: ${leaks.length} leak(s):\n${leaks.join('\n')}`);
});

/** A little text around a leaked token (the token itself masked) to say where it was. */
function context(text: string, token: string): string {
  const at = text.indexOf(token);
  return text.slice(Math.max(0, at - 120), at).replace(/\s+/g, ' ') + '<TOKEN>';
}
