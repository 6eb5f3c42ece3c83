import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from './support/ports.js';

/** The CLI as users run it: the compiled dist/main.js (npm test builds first). */
const MAIN = new URL('../dist/main.js', import.meta.url).pathname;
const EXAMPLE = new URL('../config/example.yaml', import.meta.url).pathname;
const SHIPPED_SCHEMA = new URL('../config/schema.json', import.meta.url).pathname;

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

  it('refuses a file given without --config instead of ignoring it, and says how to run with it', async () => {
    const file = configFile('publicUrl: https://app.example.com\n');
    const run = await runCli([file]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`token-handler: "${file}" is not a command; expected --config FILE, demo or config; to run with this file: token-handler --config ${file}\n`);
  });

  it('refuses an unknown word with a pointer to --help, and never starts the demo', async () => {
    const run = await runCli(['strat']);
    expect(run).toEqual({ code: 2, stdout: '', stderr: 'token-handler: "strat" is not a command; expected --config FILE, demo or config (see --help)\n' });
  });

  it('refuses a word after demo or after a config subcommand', async () => {
    expect((await runCli(['demo', 'now'])).stderr).toBe('token-handler: "now" is not a command; the demo takes no argument (see --help)\n');
    const check = await runCli(['config', 'check', 'token-handler.yaml']);
    expect(check.code).toBe(2);
    expect(check.stderr).toBe(
      'token-handler: "token-handler.yaml" is not a command; "token-handler config check" takes no other argument; to run with this file: token-handler --config token-handler.yaml\n',
    );
  });

  it('refuses an unknown option with a pointer to --help', async () => {
    const run = await runCli(['--conifg', 'x.yaml']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^token-handler: Unknown option '--conifg'.* \(see --help\)\n$/);
  });

  it('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(await runCli(['--version'])).toEqual({ code: 0, stdout: `token-handler ${version}\n`, stderr: '' });
  });

  it('--help lists the subcommands and the environment variables', async () => {
    const run = await runCli(['--help']);
    expect(run.code).toBe(0);
    for (const usage of ['token-handler [--config FILE]', 'token-handler demo', 'token-handler config schema', 'token-handler config check [--config FILE]', '--version']) {
      expect(run.stdout).toContain(usage);
    }
    for (const variable of ['TH_CONFIG', 'TH_OIDC_CLIENT_SECRET', 'TH_SESSION_SECRETS', 'TH_LISTEN_PORT', 'NODE_ENV=production', 'OTEL_']) expect(run.stdout).toContain(variable);
  });

  it('with only TH_LISTEN_PORT set, the configuration is read (and found missing) instead of starting the demo', async () => {
    const run = await runCli([], { TH_LISTEN_PORT: String(await freePort()) });
    expect(run.code).toBe(2);
    expect(run.stdout).not.toContain('demo');
    expect(run.stderr).toMatch(/^config: publicUrl: is missing/m);
  });
});

describe('token-handler config', () => {
  it('config schema prints the JSON Schema, exactly what config/schema.json holds (npm run config:schema)', async () => {
    const run = await runCli(['config', 'schema']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe(readFileSync(SHIPPED_SCHEMA, 'utf8'));
    expect(JSON.parse(run.stdout)).toMatchObject({ title: 'token-handler configuration', type: 'object' });
  });

  it('config check says OK in one line for a valid file, without starting anything', async () => {
    const run = await runCli(['config', 'check', '--config', EXAMPLE]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`config OK: ${EXAMPLE} (1 route, store cookie)\n`);
    expect(run.stderr).toBe('');
  });

  it('config check takes TH_CONFIG and the TH_* variables, and reports every problem with exit code 2', async () => {
    const file = configFile('publicUrl: https://app.example.com/path\noidc: { issuer: https://idp.example.com, clientId: bff, clientSecret: hunter2-secret }\n');
    const run = await runCli(['config', 'check'], { TH_CONFIG: file, TH_LISTEN_PORT: 'abc' });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    // In the order of the keys in the schema: listen comes first.
    expect(run.stderr.trim().split('\n')).toEqual([
      'config: listen.port (from TH_LISTEN_PORT): is "abc"; expected an integer from 0 to 65535',
      'config: publicUrl: has "/path" after the origin; expected a bare origin such as https://app.example.com (token-handler is served at the root)',
      'config: session.secrets: is missing; expected a list of secrets of at least 32 characters (in the file or as TH_SESSION_SECRETS)',
    ]);
    expect(run.stderr).not.toContain('hunter2');
  });

  it('config check names each app of apps:, takes an app\'s secret from TH_APPS_<NAME>_*, and refuses duplicate apps', async () => {
    const apps =
      'session: { secrets: [a-session-secret-that-is-long-enough-0123456789] }\n' +
      'apps:\n' +
      '  - { name: shop, publicUrl: https://shop.example.com, oidc: { issuer: https://idp.example.com, clientId: shop }, session: { cookieName: th_shop }, routes: [{ prefix: /api, upstream: http://127.0.0.1:9500 }] }\n' +
      '  - { name: admin, match: { host: shop.example.com, pathPrefix: /admin }, publicUrl: https://shop.example.com, oidc: { issuer: https://idp.example.com, clientId: admin, clientAuth: none }, session: { cookieName: th_admin, store: memory } }\n';
    const file = configFile(apps);
    const ok = await runCli(['config', 'check', '--config', file], { TH_APPS_SHOP_OIDC_CLIENT_SECRET: 'hunter2-secret' });
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toBe(`config OK: ${file} (2 apps: shop on shop.example.com (1 route, store cookie), admin on shop.example.com/admin (0 routes, store memory))\n`);
    const refused = await runCli(['config', 'check', '--config', configFile(apps.replace('name: admin', 'name: shop'))], { TH_APPS_SHOP_OIDC_CLIENT_SECRET: 'hunter2-secret' });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('config: apps[1].name: is "shop", the same as apps[0].name; each app needs its own name\n');
    expect(refused.stderr).not.toContain('hunter2');
  });

  it('config check with the configuration in the environment alone', async () => {
    const run = await runCli(['config', 'check'], {
      TH_PUBLIC_URL: 'https://app.example.com',
      TH_OIDC_ISSUER: 'https://idp.example.com',
      TH_OIDC_CLIENT_ID: 'bff',
      TH_OIDC_CLIENT_AUTH: 'none',
      TH_SESSION_SECRETS: '0123456789abcdef0123456789abcdef',
      TH_SESSION_STORE: 'memory',
    });
    expect(run).toMatchObject({ code: 0, stdout: 'config OK: the environment only (0 routes, store memory)\n' });
  });

  it('config without a known subcommand is refused with the usage', async () => {
    const run = await runCli(['config', 'lint']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^token-handler config: "lint" is not a subcommand; expected schema or check\n/);
  });
});
