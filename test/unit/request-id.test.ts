import { describe, expect, it } from 'vitest';
import { requestId } from '../../src/ops/request-log.js';

describe('request ids made by token-handler', () => {
  it('are all different, and pass as safe ids when a client sends one back', () => {
    const made = Array.from({ length: 1000 }, () => requestId({ headers: {} } as never));
    expect(new Set(made).size).toBe(1000);
    for (const id of made.slice(0, 20)) expect(requestId({ headers: { 'x-request-id': id } } as never)).toBe(id);
  });
});
