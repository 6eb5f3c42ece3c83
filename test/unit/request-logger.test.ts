import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { makeChildLoggersLazy } from '../../src/ops/request-logger.js';

/** A root logger made lazy, and a spy on pino's own child() behind it. */
function parentLogger(level = 'info') {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const child = vi.spyOn(logger, 'child');
  makeChildLoggersLazy(logger);
  return { logger, lines, child };
}

describe("each request's logger", () => {
  it('is not made for a request that writes nothing, or only below the level', () => {
    const { logger, lines, child } = parentLogger('info');
    const requestLog = logger.child({ reqId: 'r-1' }, {});
    requestLog.debug('not written');
    requestLog.trace({ some: 'object' }, 'not written either');
    expect(child).not.toHaveBeenCalled();
    expect(lines).toEqual([]);
    expect(requestLog.level).toBe('info');
  });

  it('writes lines bound to the request id, with pino child semantics, once one is written', () => {
    const { logger, lines, child } = parentLogger('info');
    const requestLog = logger.child({ reqId: 'r-2' }, {});
    requestLog.warn({ err: { message: 'boom' } }, 'upstream request failed');
    requestLog.info('second line');
    expect(child).toHaveBeenCalledTimes(1);
    expect(lines).toMatchObject([
      { level: 40, reqId: 'r-2', err: { message: 'boom' }, msg: 'upstream request failed' },
      { level: 30, reqId: 'r-2', msg: 'second line' },
    ]);
  });

  it('gives grandchildren both sets of bindings', () => {
    const { logger, lines } = parentLogger('info');
    logger.child({ reqId: 'r-3' }, {}).child({ part: 'refresh' }).error('failed');
    expect(lines).toMatchObject([{ level: 50, reqId: 'r-3', part: 'refresh', msg: 'failed' }]);
  });

  it('is a real child at once when the route sets its own log level', () => {
    const { logger, lines, child } = parentLogger('info');
    const requestLog = logger.child({ reqId: 'r-4' }, { level: 'debug' });
    expect(child).toHaveBeenCalledTimes(1);
    requestLog.debug('route-level debug');
    expect(lines).toMatchObject([{ level: 20, reqId: 'r-4', msg: 'route-level debug' }]);
  });

  it("gives a made child's own children pino's semantics too", () => {
    const { logger, lines } = parentLogger('info');
    const requestLog = logger.child({ reqId: 'r-5' }, {});
    requestLog.info('made');
    requestLog.child({ part: 'a' }).child({ step: 2 }).warn('deep');
    expect(lines).toMatchObject([
      { reqId: 'r-5', msg: 'made' },
      { level: 40, reqId: 'r-5', part: 'a', step: 2, msg: 'deep' },
    ]);
  });
});
