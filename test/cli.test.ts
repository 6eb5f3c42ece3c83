import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from './support/ports.js';

/** The CLI as users run it: the compiled dist/main.js (npm test builds first). */
const MAIN = new URL('../dist/main.js', import.meta.url).pathname;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], env: Record<string, string> = {}, untilExit = true): Promise<Run> & { child?: ReturnType<typeof spawn> } {
  const child = spawn(process.execPath, [MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<Run>((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
  return Object.assign(untilExit ? done : done, { child });
}

function configFile(content: string, name = 'token-handler.yaml'): string {
  const dir = mkdtempSync(join(tmpdir(), 'th-cli-'));
  const file = join(dir, name);
  writeFileSync(file, content);
  return file;
}

describe('token-handler CLI', () => {
  it('refuses invalid configuration with exit code 2 and one line per problem naming the key', async () => {
    const file = configFile(
      [
        'publicUrl: not-a-url',
        'oidc:',
        '  issuer: https://idp.example.com',
        '  clientId: bff',
        '  clientAuth: magic',
        'session:',
        '  secrets: ["too-short"]',
        'listen: { port: 99999 }',
      ].join('\n'),
    );
    const run = await runCli(['--config', file]);
    expect(run.code).toBe(2);
    const lines = run.stderr.trim().split('\n');
    expect(lines.find((l) => l.includes('publicUrl'))).toBeDefined();
    expect(lines.find((l) => l.includes('oidc.clientAuth'))).toMatch(/client_secret_basic/);
    expect(lines.find((l) => l.includes('session.secrets[0]'))).toMatch(/32/);
    expect(lines.find((l) => l.includes('listen.port'))).toMatch(/65535/);
    expect(run.stderr).not.toContain('too-short');
  });

  it('takes the file from TH_CONFIG and overrides from TH_* variables', async () => {
    const file = configFile('{"publicUrl": "https://app.example.com", "oidc": {"issuer": "https://idp.example.com", "clientId": "bff", "clientSecret": "s"}}', 'c.json');
    const run = await runCli([], { TH_CONFIG: file, TH_LISTEN_PORT: 'abc' });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/listen\.port \(from TH_LISTEN_PORT\)/);
    expect(run.stderr).toMatch(/session\.secrets/);
  });

  it('starts with a valid configuration, answers /healthz while the provider is unreachable, and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const deadIssuer = `http://127.0.0.1:${await freePort()}`;
    const file = configFile(
      [
        'publicUrl: https://app.example.com',
        `listen: { host: 127.0.0.1, port: ${port} }`,
        'metrics: { port: 0 }',
        'oidc:',
        `  issuer: ${deadIssuer}`,
        '  clientId: bff',
        '  clientSecret: s',
        'session:',
        '  secrets: ["0123456789abcdef0123456789abcdef"]',
      ].join('\n'),
    );
    const run = runCli(['--config', file], {}, false);
    await expect
      .poll(async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status, { timeout: 10_000, interval: 100 })
      .toBe(200);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(503);
    run.child!.kill('SIGTERM');
    const result = await run;
    expect(result.code).toBe(0);
  });
});
