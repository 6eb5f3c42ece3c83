import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions, LevelWithSilent, Logger } from 'pino';

type WritingLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
type MakeChild = (bindings: Bindings, options?: ChildLoggerOptions) => FastifyBaseLogger;

/**
 * Makes the children of the app's root logger lazy: Fastify asks `logger.child()` for one
 * logger per request (bound to the request id), and pino's `child()` serialises the bindings
 * and builds a logger object each time — about 2 µs a request in the proxy's CPU profile —
 * while a proxied request that goes well writes nothing through it (its request line comes
 * from the access log). A child is made on the first line actually written through it;
 * calls at disabled levels cost a level check. Children with their own level, serializers
 * or redaction (route-level log options) are made at once.
 *
 * Fastify's `childLoggerFactory` option would do the same, but Fastify then checks the logger
 * it returns on every request (seven method lookups, an array and a closure: more instructions
 * than the lazy child saves); it skips that check for its default factory, which calls this
 * `child`.
 */
export function makeChildLoggersLazy(root: FastifyBaseLogger): void {
  const pinoRoot = root as Logger;
  const pinoChild = pinoRoot.child as (this: Logger, bindings: Bindings, options?: ChildLoggerOptions) => FastifyBaseLogger;
  const makeChild: MakeChild = (bindings, options) => pinoChild.call(pinoRoot, bindings, options);
  // pino's children inherit from their parent object, this property included: only the
  // root's own children are lazy; a child's children are pino's.
  pinoRoot.child = function (this: Logger, bindings: Bindings, options?: ChildLoggerOptions) {
    const custom = options !== undefined && (options.level !== undefined || options.serializers !== undefined || options.redact !== undefined);
    if (this !== pinoRoot || custom) return pinoChild.call(this, bindings, options);
    return new LazyChildLogger(pinoRoot, makeChild, bindings);
  } as Logger['child'];
}

class LazyChildLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly makeChild: MakeChild,
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
    this.made ??= this.makeChild(this.bindings);
    return bindings === undefined ? this.made : this.made.child(bindings, options);
  }

  private write(level: WritingLevel, args: unknown[]): void {
    if (this.made === undefined && !this.parent.isLevelEnabled(level)) return;
    (this.child()[level] as (...a: unknown[]) => void)(...args);
  }
}
