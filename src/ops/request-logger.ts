import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions, LevelWithSilent, Logger } from 'pino';

type WritingLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * Fastify's `childLoggerFactory`: the per-request logger (bound to the request id) is
 * made on the first line actually written through it. Fastify asks for one per request,
 * and pino's `child()` serialises the bindings and builds a logger object each time —
 * about 2 µs a request in the proxy's CPU profile — while a proxied request that goes
 * well writes nothing through it (its request line comes from the access log). Calls at
 * disabled levels cost a level check. Route-level log options get a real child at once.
 */
export function lazyChildLogger(logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  if (options.level !== undefined || options.serializers !== undefined || options.redact !== undefined) return logger.child(bindings, options);
  return new LazyChildLogger(logger as Logger, bindings);
}

class LazyChildLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly bindings: Bindings,
  ) {}

  get level(): LevelWithSilent | string {
    return this.made?.level ?? this.parent.level;
  }

  set level(level: LevelWithSilent | string) {
    this.child().level = level;
  }

  // Methods on the prototype, not per-instance arrow functions: nothing is allocated for a
  // request that logs nothing.
  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.write('error', args);
  }
  warn(...args: unknown[]): void {
    this.write('warn', args);
  }
  info(...args: unknown[]): void {
    this.write('info', args);
  }
  debug(...args: unknown[]): void {
    this.write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.write('trace', args);
  }
  silent(): void {}

  child(bindings?: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    this.made ??= this.parent.child(this.bindings);
    return bindings === undefined ? this.made : this.made.child(bindings, options);
  }

  private write(level: WritingLevel, args: unknown[]): void {
    if (this.made === undefined && !this.parent.isLevelEnabled(level)) return;
    (this.child()[level] as (...a: unknown[]) => void)(...args);
  }
}
