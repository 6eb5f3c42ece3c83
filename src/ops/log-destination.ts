import { pino, type DestinationStream } from 'pino';

/** Request lines are held until this many characters have gathered… */
const BATCH_CHARACTERS = 4096;
/** …or this long after the first of them. */
const BATCH_DELAY_MS = 1000;

export interface LogDestination extends DestinationStream {
  /** Writes a line now, after any lines still held (so lines stay in order). */
  write(line: string): void;
  /** Writes a line now or with the next batch (request lines: one per request). */
  writeBatched(line: string): void;
  /** Writes what is held and stops (the app closes). */
  close(): void;
}

/**
 * Where token-handler's log lines go (stdout in production), through pino's synchronous
 * destination. Request lines may be batched (`logging.batchRequestLines`): one system call
 * per proxied request for its line was a measurable share of the proxy's hot path
 * (bench/README.md). Every other line is written at once, after the held request lines.
 */
export function logDestination(dest: number | string, batchRequestLines: boolean): LogDestination {
  return new BatchedLines(pino.destination({ dest, sync: true }), batchRequestLines ? BATCH_CHARACTERS : 0);
}

/**
 * Request lines are written in one call once 4 KiB have gathered, a second after the first
 * of them, before any other line, and at process exit. They are joined from an array rather
 * than appended to a string: a growing concatenated string would be flattened (copied) by
 * every write.
 */
class BatchedLines implements LogDestination {
  private held: string[] = [];
  private characters = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly flushOnExit = () => this.flush();

  constructor(
    private readonly target: DestinationStream,
    private readonly batchCharacters: number,
  ) {
    if (batchCharacters > 0) process.once('exit', this.flushOnExit);
  }

  write(line: string): void {
    if (this.held.length > 0) this.flush();
    this.target.write(line);
  }

  writeBatched(line: string): void {
    if (this.batchCharacters === 0) {
      this.target.write(line);
      return;
    }
    this.held.push(line);
    this.characters += line.length;
    if (this.characters >= this.batchCharacters) this.flush();
    else this.timer ??= setTimeout(this.flush, BATCH_DELAY_MS).unref();
  }

  close(): void {
    this.flush();
    process.off('exit', this.flushOnExit);
  }

  private flush = (): void => {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.held.length === 0) return;
    const chunk = this.held.join('');
    this.held = [];
    this.characters = 0;
    this.target.write(chunk);
  };
}
