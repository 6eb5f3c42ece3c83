import { hostname } from 'node:os';
import type { DestinationStream, Level } from 'pino';

/** What one request line says: only session-safe fields. */
export interface AccessLogEntry {
  reqId: string;
  method: string;
  url: string;
  status: number;
  cutOff: boolean;
  /** Milliseconds from request to response; written with one decimal. */
  ms: number;
  group: string;
  /** The app's name, with several apps (apps:); undefined in the single-app form. */
  app?: string | undefined;
  /** A hash of the session id (never the id itself). */
  session: string | undefined;
  /** The user's `sub`, only when `logging.includeSubject` is on. */
  sub: string | undefined;
}

/** pino's numeric levels: a request line is `info`. */
const LEVEL_VALUES: Record<Level, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/**
 * The request lines, one JSON object per line in pino's shape (`level`, `time`, `pid`,
 * `hostname`, the fields, `msg: "request"`), so log pipelines read them like every other
 * line. Written by hand rather than through pino: the fields are fixed and known to be
 * safe, and a generic logger's per-line key walk, value stringifying and redaction were a
 * measurable share of the proxy's hot path (see bench/README.md). Strings that come from
 * the request (URL, request id, `sub`) are JSON-escaped; the rest are our own values.
 */
export class AccessLog {
  readonly enabled: boolean;
  private readonly tail: string;
  /** `"group":"…"` per route group, escaped once. */
  private readonly groups = new Map<string, string>();

  /** The destination's batched write where it has one (see log-destination.ts). */
  private readonly writeLine: (line: string) => void;
  /** The line's start up to `"reqId":`, for the current millisecond (several requests share one). */
  private headTime = -1;
  private head = '';

  constructor(destination: DestinationStream & { writeBatched?: (line: string) => void }, level: Level | 'silent') {
    this.writeLine = destination.writeBatched ? destination.writeBatched.bind(destination) : destination.write.bind(destination);
    this.enabled = level !== 'silent' && LEVEL_VALUES[level] <= LEVEL_VALUES.info;
    this.tail = `,"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"reqId":`;
  }

  /** An access log that writes nothing: in a host server, request lines are the host's own. */
  static off(): AccessLog {
    return new AccessLog({ write: () => true } as unknown as DestinationStream, 'silent');
  }

  write(entry: AccessLogEntry): void {
    if (!this.enabled) return;
    let group = this.groups.get(entry.group);
    if (group === undefined) {
      group = `,"group":${JSON.stringify(entry.group)}`;
      this.groups.set(entry.group, group);
    }
    const now = Date.now();
    if (now !== this.headTime) {
      this.headTime = now;
      this.head = `{"level":30,"time":${now}${this.tail}`;
    }
    this.writeLine(
      `${this.head}${jsonString(entry.reqId)},"method":${jsonString(entry.method)},"url":${jsonString(entry.url)},"status":${entry.status}${
        entry.cutOff ? ',"cutOff":true' : ''
      },"ms":${tenths(entry.ms)}${group}${entry.app !== undefined ? `,"app":${jsonString(entry.app)}` : ''}${entry.session !== undefined ? `,"session":${jsonString(entry.session)}` : ''}${
        entry.sub !== undefined ? `,"sub":${jsonString(entry.sub)}` : ''
      },"msg":"request"}\n`,
    );
  }
}

/**
 * Milliseconds with one decimal, from integers: converting the double itself to a string
 * is several times slower. Whole values keep their ".0" (the same number to any JSON reader).
 */
function tenths(ms: number): string {
  const rounded = Math.round(ms * 10);
  if (!(rounded >= 0 && rounded <= 0x7fffffff)) return String(rounded / 10);
  // `| 0` keeps every part a small integer, whose string V8 makes cheaply; a double goes
  // through dtoa.
  const value = rounded | 0;
  const whole = (value / 10) | 0;
  return `${whole}.${value - whole * 10}`;
}

/**
 * A JSON string literal, as JSON.stringify writes it. Request ids, methods, session hashes
 * and most URLs are plain printable ASCII with nothing to escape: those are quoted as they
 * are (a character scan is several times cheaper than the JSON.stringify call, and there
 * are five per line); anything else goes through JSON.stringify.
 */
export function jsonString(value: string): string {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code > 0x7e || code === 0x22 || code === 0x5c) return JSON.stringify(value);
  }
  return `"${value}"`;
}
