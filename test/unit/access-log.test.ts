import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { AccessLog, jsonString, type AccessLogEntry } from '../../src/ops/access-log.js';
import { logDestination } from '../../src/ops/log-destination.js';

class Lines {
  readonly lines: string[] = [];
  write(line: string): void {
    this.lines.push(line);
  }
}

const entry: AccessLogEntry = {
  reqId: 'trace-123',
  method: 'GET',
  url: '/api/items?q=1',
  status: 200,
  cutOff: false,
  ms: 1.4,
  group: 'api:/api',
  session: 'AbCdEf123456',
  sub: undefined,
};

describe('request lines', () => {
  it("read like pino's own lines: level, time, pid, hostname, the fields, msg", () => {
    const ours = new Lines();
    new AccessLog(ours, 'info').write(entry);
    const pinos = new Lines();
    const { sub: _sub, cutOff: _cutOff, ...fields } = entry;
    pino({ level: 'info' }, pinos).info(fields, 'request');

    const line = JSON.parse(ours.lines[0]!) as Record<string, unknown>;
    const reference = JSON.parse(pinos.lines[0]!) as Record<string, unknown>;
    expect(ours.lines[0]!.endsWith('}\n')).toBe(true);
    expect(Object.keys(line)).toEqual(Object.keys(reference));
    expect({ ...line, time: 0 }).toEqual({ ...reference, time: 0 });
    expect(Math.abs((line.time as number) - Date.now())).toBeLessThan(5_000);
  });

  it('stay one JSON object whatever the URL, request id or sub hold', () => {
    const ours = new Lines();
    const hostile = '/api/x?"},"level":60,"msg":"forged\\\n\u2028';
    new AccessLog(ours, 'info').write({ ...entry, url: hostile, reqId: 'a"b', sub: 'user "x"\n', cutOff: true });
    expect(ours.lines).toHaveLength(1);
    expect(ours.lines[0]!.split('\n')).toHaveLength(2);
    expect(JSON.parse(ours.lines[0]!)).toMatchObject({ level: 30, url: hostile, reqId: 'a"b', sub: 'user "x"\n', cutOff: true, msg: 'request' });
  });

  it('are not written when the level is above info', () => {
    const ours = new Lines();
    const log = new AccessLog(ours, 'warn');
    log.write(entry);
    expect(log.enabled).toBe(false);
    expect(ours.lines).toEqual([]);
  });
});

describe('the log destination', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });
  const tempFile = () => {
    dir = mkdtempSync(join(tmpdir(), 'th-log-'));
    return join(dir, 'out.log');
  };

  it('holds request lines until 4 KiB have gathered, then writes them in order', () => {
    const file = tempFile();
    const destination = logDestination(file, true);
    const line = (i: number) => `{"n":${i},"pad":"${'x'.repeat(90)}"}\n`;
    for (let i = 0; i < 10; i++) destination.writeBatched(line(i));
    expect(readFileSync(file, 'utf8')).toBe('');
    for (let i = 10; i < 50; i++) destination.writeBatched(line(i));
    const written = readFileSync(file, 'utf8');
    expect(written.length).toBeGreaterThanOrEqual(4096);
    expect(written).toBe(Array.from({ length: written.split('\n').length - 1 }, (_, i) => line(i)).join(''));
    destination.close();
    expect(readFileSync(file, 'utf8')).toBe(Array.from({ length: 50 }, (_, i) => line(i)).join(''));
  });

  it('writes held request lines before any other line, so the order is kept', () => {
    const file = tempFile();
    const destination = logDestination(file, true);
    destination.writeBatched('request 1\n');
    destination.writeBatched('request 2\n');
    destination.write('warning\n');
    expect(readFileSync(file, 'utf8')).toBe('request 1\nrequest 2\nwarning\n');
    destination.close();
  });

  it('writes held request lines a second after the first of them', async () => {
    const file = tempFile();
    const destination = logDestination(file, true);
    destination.writeBatched('request 1\n');
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    expect(readFileSync(file, 'utf8')).toBe('request 1\n');
    destination.close();
  });

  it('writes every request line at once with logging.batchRequestLines off', () => {
    const file = tempFile();
    const destination = logDestination(file, false);
    destination.writeBatched('request 1\n');
    expect(readFileSync(file, 'utf8')).toBe('request 1\n');
    destination.close();
  });
});

describe('jsonString', () => {
  it('quotes plain printable ASCII as it is, exactly as JSON.stringify would', () => {
    for (const value of ['', 'GET', '0b5c3c1e-7a0e-4c57-9a43-1f0f4e2b9d11', '/api/items?q=1&x=%22', 'AbCdEf_-12']) {
      expect(jsonString(value)).toBe(JSON.stringify(value));
    }
  });

  it('escapes quotes, backslashes, control characters and non-ASCII exactly as JSON.stringify does', () => {
    for (const value of ['a"b', 'a\\b', 'line\nbreak', 'tab\t', '\u0000', 'é', '\u2028', '\ud800', '😀', '\u007f']) {
      expect(jsonString(value)).toBe(JSON.stringify(value));
      expect(JSON.parse(jsonString(value))).toBe(value);
    }
  });
});

describe('the ms field', () => {
  it.each([
    [1.44, 1.4],
    [1.45, 1.5],
    [0, 0],
    [0.04, 0],
    [12, 12],
    [12345.678, 12345.7],
  ])('%s ms is written as %s', (ms, written) => {
    const ours = new Lines();
    new AccessLog(ours, 'info').write({ ...entry, ms });
    expect(JSON.parse(ours.lines[0]!).ms).toBe(written);
  });
});
