/**
 * The deployment examples (config/kubernetes/*.yaml, config/docker-compose.yaml and the
 * config file it mounts) checked the way an operator would meet them: they parse, the
 * probes, ports, secrets and shutdown timing line up with what token-handler does, every
 * TH_* variable is one token-handler knows, and the mounted configuration files pass the
 * same validation the process runs at startup. There is no container engine here, so
 * nothing is applied or run except the example API's inline script.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigError, configEnvNames, parseConfig } from '../src/config/load.js';
import { freePort } from './support/ports.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const K8S_DIR = join(ROOT, 'config/kubernetes');
const COMPOSE_FILE = join(ROOT, 'config/docker-compose.yaml');
const COMPOSE_DIR = dirname(COMPOSE_FILE);

/**
 * Every variable token-handler accepts (TH_CONFIG names the file and is not a key).
 * The examples rely on TH_METRICS_PORT / metrics.port and
 * TH_SHUTDOWN_GRACE_PERIOD_SECONDS / shutdown.gracePeriodSeconds, which come from the
 * schema like every other key.
 */
const KNOWN_VARIABLES = new Set([...configEnvNames(), 'TH_CONFIG']);

/** Values an operator would supply; secrets long enough to pass validation. */
const TEST_VALUES: Record<string, string> = {
  TH_OIDC_ISSUER: 'https://idp.example.com',
  TH_OIDC_CLIENT_ID: 'my-app-bff',
  TH_OIDC_CLIENT_SECRET: 'a-client-secret-from-the-provider',
  TH_SESSION_SECRETS: 'first-session-secret-0123456789abcdefghij,second-session-secret-0123456789abcdefgh',
  TH_SESSION_REDIS_URL: 'redis://:a-redis-password@redis:6379',
};

// ---------------------------------------------------------------------------
// The shapes read from the manifests (only what the checks need)
// ---------------------------------------------------------------------------

type Json = Record<string, unknown>;

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  file: string;
  [key: string]: unknown;
}

interface EnvVar {
  name: string;
  value?: unknown;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } };
}

interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  capabilities?: { drop?: string[]; add?: string[] };
}

interface HttpProbe {
  httpGet?: { path: string; port: number | string };
}

interface Container {
  name: string;
  image: string;
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number }>;
  livenessProbe?: HttpProbe;
  readinessProbe?: HttpProbe;
  startupProbe?: HttpProbe;
  lifecycle?: { preStop?: { exec?: { command: string[] }; sleep?: { seconds: number } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: SecurityContext;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}

interface PodSpec {
  containers: Container[];
  terminationGracePeriodSeconds?: number;
  enableServiceLinks?: boolean;
  securityContext?: SecurityContext;
  volumes?: Array<{ name: string; configMap?: { name: string; items?: Array<{ key: string; path: string }> } }>;
}

interface Deployment extends Manifest {
  spec: { replicas?: number; selector: { matchLabels: Record<string, string> }; template: { metadata: Manifest['metadata']; spec: PodSpec } };
}

interface Service extends Manifest {
  spec: { selector: Record<string, string>; ports: Array<{ name?: string; port: number; targetPort?: number | string }> };
}

interface Secret extends Manifest {
  stringData?: Record<string, string>;
  data?: Record<string, string>;
}

interface ConfigMap extends Manifest {
  data: Record<string, string>;
}

interface Ingress extends Manifest {
  spec: {
    rules: Array<{
      http: { paths: Array<{ path: string; backend: { service: { name: string; port: { name?: string; number?: number } } } }> };
    }>;
  };
}

interface ComposeService {
  build?: string | { context: string; dockerfile?: string };
  image?: string;
  environment?: Record<string, string | number | boolean | null> | string[];
  volumes?: Array<string | { type: string; source: string; target: string }>;
  ports?: Array<string | number | { target: number; published?: string | number }>;
  expose?: Array<string | number>;
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test: string | string[] };
  stop_grace_period?: string;
  command?: string | string[];
}

interface ComposeFile {
  services: Record<string, ComposeService>;
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/** Every document of a YAML file; a syntax error or duplicate key fails with its position. */
function yamlDocuments(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  if (!Array.isArray(docs)) return []; // an empty stream
  for (const doc of docs) {
    expect(doc.errors.map((e) => `${file}: ${e.message}`), file).toEqual([]);
  }
  return docs.map((doc) => doc.toJS() as unknown).filter((value) => value !== null);
}

const k8sFiles = readdirSync(K8S_DIR)
  .filter((name) => name.endsWith('.yaml') || name.endsWith('.yml'))
  .sort()
  .map((name) => join(K8S_DIR, name));

function manifests(): Manifest[] {
  return k8sFiles.flatMap((file) => yamlDocuments(file).map((doc) => ({ ...(doc as Manifest), file })));
}

function ofKind<T extends Manifest>(kind: string): T[] {
  return manifests().filter((m) => m.kind === kind) as T[];
}

function named<T extends Manifest>(kind: string, name: string): T {
  const found = ofKind<T>(kind).find((m) => m.metadata.name === name);
  if (!found) throw new Error(`no ${kind} named ${name} in config/kubernetes`);
  return found;
}

/** The Deployment whose pod carries token-handler. */
function appDeployment(): Deployment {
  const found = ofKind<Deployment>('Deployment').filter((d) => d.spec.template.spec.containers.some((c) => c.name === 'token-handler'));
  expect(found, 'exactly one Deployment runs a container named token-handler').toHaveLength(1);
  return found[0]!;
}

function container(pod: PodSpec, name: string): Container {
  const found = pod.containers.find((c) => c.name === name);
  if (!found) throw new Error(`no container named ${name}`);
  return found;
}

function tokenHandler(): Container {
  return container(appDeployment().spec.template.spec, 'token-handler');
}

/** A container port given by number or by name, as a number. */
function portNumber(c: Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

function envValue(c: Container, name: string): EnvVar | undefined {
  return c.env?.find((e) => e.name === name);
}

/** Value of a Secret key, from stringData or base64 data. */
function secretValue(secret: Secret, key: string): string | undefined {
  if (secret.stringData?.[key] !== undefined) return secret.stringData[key];
  const data = secret.data?.[key];
  return data === undefined ? undefined : Buffer.from(data, 'base64').toString('utf8');
}

/** The ConfigMap file token-handler reads, parsed. */
function k8sConfigFile(): { raw: Json; configMap: ConfigMap; key: string } {
  const pod = appDeployment().spec.template.spec;
  const th = container(pod, 'token-handler');
  const configPath = envValue(th, 'TH_CONFIG')?.value;
  expect(typeof configPath, 'TH_CONFIG is set to a literal path').toBe('string');
  const mount = th.volumeMounts?.find((m) => (configPath as string).startsWith(`${m.mountPath}/`));
  if (!mount) throw new Error(`TH_CONFIG=${String(configPath)} is not inside any volume mounted into token-handler`);
  const volume = pod.volumes?.find((v) => v.name === mount.name);
  if (!volume?.configMap) throw new Error(`volume ${mount.name} is not a ConfigMap`);
  const fileName = (configPath as string).slice(mount.mountPath.length + 1);
  const item = volume.configMap.items?.find((i) => i.path === fileName);
  const key = item ? item.key : fileName;
  const configMap = named<ConfigMap>('ConfigMap', volume.configMap.name);
  const text = configMap.data[key];
  if (text === undefined) throw new Error(`ConfigMap ${configMap.metadata.name} has no key ${key}`);
  return { raw: parse(text) as Json, configMap, key };
}

/** The environment token-handler gets in the pod; secretKeyRef values replaced by the given ones. */
function k8sEnv(secretValues: (ref: { name: string; key: string }, variable: string) => string): Record<string, string> {
  return Object.fromEntries(
    (tokenHandler().env ?? []).map((e): [string, string] => {
      if (e.valueFrom?.secretKeyRef) return [e.name, secretValues(e.valueFrom.secretKeyRef, e.name)];
      return [e.name, String(e.value ?? '')];
    }),
  );
}

function compose(): ComposeFile {
  const docs = yamlDocuments(COMPOSE_FILE);
  expect(docs, 'docker-compose.yaml is one document').toHaveLength(1);
  return docs[0] as ComposeFile;
}

function composeService(name: string): ComposeService {
  const service = compose().services[name];
  if (!service) throw new Error(`docker-compose.yaml has no service ${name}`);
  return service;
}

function composeEnvironment(service: ComposeService): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((line) => [line.split('=')[0]!, line.slice(line.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v)]));
}

/**
 * Compose's variable interpolation, enough for these files: $$, ${NAME}, ${NAME:-default},
 * ${NAME-default}, ${NAME:?error}, ${NAME?error}.
 */
function interpolate(text: string, vars: Record<string, string | undefined>): string {
  return text.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (match, braced, colon, op, arg, bare) => {
    if (match === '$$') return '$';
    const name = (braced ?? bare) as string;
    const value = vars[name];
    const unset = colon === ':' ? value === undefined || value === '' : value === undefined;
    if (!unset) return value as string;
    if (op === '?') throw new Error(`required variable ${name} is missing a value: ${String(arg)}`);
    return op === '-' ? (arg as string) : '';
  });
}

function composeConfigFile(): { raw: Json; target: string } {
  const th = composeService('token-handler');
  const target = composeEnvironment(th).TH_CONFIG;
  const mount = (th.volumes ?? [])
    .map((v) => (typeof v === 'string' ? { source: v.split(':')[0]!, target: v.split(':')[1]! } : v))
    .find((v) => v.target === target);
  if (!mount) throw new Error(`TH_CONFIG=${String(target)} is not a file mounted into token-handler`);
  const source = resolve(COMPOSE_DIR, mount.source);
  return { raw: parse(readFileSync(source, 'utf8')) as Json, target: target! };
}

/** Published host ports of a compose service ("8080:8080", "127.0.0.1:8080:8080", {published}). */
function publishedPorts(service: ComposeService): Array<{ published: string; target: string }> {
  return (service.ports ?? []).map((p) => {
    if (typeof p === 'object') return { published: String(p.published ?? ''), target: String(p.target) };
    const parts = String(p).split('/')[0]!.split(':');
    const target = parts.pop()!;
    return { published: parts.pop() ?? '(ephemeral)', target };
  });
}

function dependsOn(service: ComposeService): Record<string, { condition?: string }> {
  const deps = service.depends_on ?? {};
  return Array.isArray(deps) ? Object.fromEntries(deps.map((d) => [d, {}])) : deps;
}

function healthcheckCommand(service: ComposeService): string[] {
  const test = service.healthcheck?.test;
  if (test === undefined) return [];
  return typeof test === 'string' ? ['CMD-SHELL', test] : test;
}

/** Seconds of a compose duration like "30s", "1m30s". */
function durationSeconds(text: string): number {
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us)/g)) {
    const factor = { h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 }[unit as 'h' | 'm' | 's' | 'ms' | 'us'];
    total += Number(amount) * factor;
  }
  return total;
}

function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError, but the configuration was accepted');
}

/** Default of shutdown.gracePeriodSeconds (config/example.yaml). */
const DEFAULT_GRACE_PERIOD_SECONDS = 25;

function gracePeriodOf(raw: Json): number {
  const shutdown = raw.shutdown as { gracePeriodSeconds?: number } | undefined;
  return shutdown?.gracePeriodSeconds ?? DEFAULT_GRACE_PERIOD_SECONDS;
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

describe('Kubernetes example (config/kubernetes)', () => {
  it('every manifest file parses, every document is a named Kubernetes object, and env values are strings', () => {
    expect(k8sFiles.length).toBeGreaterThan(0);
    const all = manifests();
    for (const m of all) {
      expect(typeof m.apiVersion, `${m.file}: apiVersion`).toBe('string');
      expect(typeof m.kind, `${m.file}: kind`).toBe('string');
      expect(m.metadata?.name, `${m.file}: metadata.name of a ${m.kind}`).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    const kinds = new Set(all.map((m) => m.kind));
    for (const kind of ['Deployment', 'Service', 'Secret', 'ConfigMap']) expect(kinds, kind).toContain(kind);
    // kubectl refuses `value: 9500` (a number) in env; it must be a string.
    for (const d of ofKind<Deployment>('Deployment')) {
      for (const c of d.spec.template.spec.containers) {
        for (const e of c.env ?? []) {
          if (e.valueFrom === undefined) expect(typeof e.value, `${d.metadata.name}/${c.name} env ${e.name}`).toBe('string');
        }
      }
      // The selector must match the pod template's labels, or the API server rejects it.
      expect(d.spec.template.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
    }
  });

  it('the pod runs the API and token-handler side by side, the API reachable only on 127.0.0.1:9500 through the route', () => {
    const pod = appDeployment().spec.template.spec;
    expect(pod.containers.map((c) => c.name).sort()).toEqual(['api', 'token-handler']);
    expect(container(pod, 'api').ports ?? [], 'the API declares no port for the outside').toEqual([]);
    const { raw } = k8sConfigFile();
    expect(raw.routes).toEqual([expect.objectContaining({ prefix: '/api', upstream: 'http://127.0.0.1:9500' })]);
  });

  it("the kubelet checks liveness on /healthz and readiness on /readyz at token-handler's own port", () => {
    const th = tokenHandler();
    const listenPort = (k8sConfigFile().raw.listen as { port: number }).port;
    expect(th.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(th.readinessProbe?.httpGet?.path).toBe('/readyz');
    expect(portNumber(th, th.livenessProbe?.httpGet?.port)).toBe(listenPort);
    expect(portNumber(th, th.readinessProbe?.httpGet?.port)).toBe(listenPort);
    if (th.startupProbe) expect(th.startupProbe.httpGet?.path).toBe('/healthz');
    expect(portNumber(th, 'http')).toBe(8080);
  });

  it('token-handler runs as non-root (numeric uid) with a read-only root filesystem, no capabilities and resource limits', () => {
    const pod = appDeployment().spec.template.spec;
    for (const c of pod.containers) {
      const sc = { ...pod.securityContext, ...c.securityContext };
      expect(sc.runAsNonRoot, `${c.name}: runAsNonRoot`).toBe(true);
      // The image's USER is the name "node": the kubelet refuses runAsNonRoot unless a
      // numeric uid is given here.
      expect(sc.runAsUser, `${c.name}: numeric non-zero runAsUser`).toBeGreaterThan(0);
      expect(sc.readOnlyRootFilesystem, `${c.name}: readOnlyRootFilesystem`).toBe(true);
      expect(sc.allowPrivilegeEscalation, `${c.name}: allowPrivilegeEscalation`).toBe(false);
      expect(sc.capabilities?.drop, `${c.name}: capabilities dropped`).toEqual(['ALL']);
      expect(sc.capabilities?.add ?? []).toEqual([]);
      expect(c.resources?.requests?.cpu, `${c.name}: cpu request`).toBeDefined();
      expect(c.resources?.requests?.memory, `${c.name}: memory request`).toBeDefined();
      expect(c.resources?.limits?.memory, `${c.name}: memory limit`).toBeDefined();
    }
    expect(tokenHandler().securityContext?.runAsUser, 'uid of the node user in node:20 images').toBe(1000);
  });

  it('on SIGTERM there is time to drain: terminationGracePeriodSeconds exceeds the preStop delay plus shutdown.gracePeriodSeconds', () => {
    const pod = appDeployment().spec.template.spec;
    const grace = gracePeriodOf(k8sConfigFile().raw);
    const preStop = tokenHandler().lifecycle?.preStop;
    const command = preStop?.exec?.command ?? [];
    const preStopSeconds = preStop?.sleep?.seconds ?? (command[0] === 'sleep' ? Number(command[1]) : 0);
    expect(Number.isFinite(preStopSeconds)).toBe(true);
    // Kubernetes' default is 30; anything at or below 25 s cuts the default drain short.
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(DEFAULT_GRACE_PERIOD_SECONDS);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(preStopSeconds + grace);
  });

  it('secrets reach token-handler from the Secret via secretKeyRef, never as literals in the Deployment', () => {
    const deployment = appDeployment();
    const th = tokenHandler();
    const secretNames = new Set(ofKind<Secret>('Secret').map((s) => s.metadata.name));
    const keys = {
      TH_OIDC_CLIENT_SECRET: 'oidc client secret',
      TH_SESSION_SECRETS: 'session secrets',
      TH_SESSION_REDIS_URL: 'Redis URL (may carry a password)',
    };
    for (const [variable, what] of Object.entries(keys)) {
      const env = envValue(th, variable);
      expect(env?.value, `${variable} (${what}) has no literal value`).toBeUndefined();
      const ref = env?.valueFrom?.secretKeyRef;
      expect(ref, `${variable} comes from a secretKeyRef`).toBeDefined();
      expect(secretNames, `${variable}: Secret ${ref!.name} is defined`).toContain(ref!.name);
      expect(secretValue(named<Secret>('Secret', ref!.name), ref!.key), `${variable}: key ${ref!.key} exists`).toBeDefined();
    }
    // Nothing secret as a literal: no TH_* variable naming a secret has a value, and no
    // value of any Secret appears anywhere in the Deployment.
    for (const c of deployment.spec.template.spec.containers) {
      for (const e of c.env ?? []) {
        if (/SECRET|PASSWORD|TOKEN|REDIS_URL|JWK/.test(e.name)) expect(e.value, `${c.name} env ${e.name}`).toBeUndefined();
      }
    }
    const text = JSON.stringify(deployment);
    for (const secret of ofKind<Secret>('Secret')) {
      for (const key of Object.keys({ ...secret.stringData, ...secret.data })) {
        expect(text, `value of ${secret.metadata.name}/${key}`).not.toContain(secretValue(secret, key));
      }
    }
    // And none in the config file either.
    const { raw } = k8sConfigFile();
    expect((raw.oidc as Json).clientSecret).toBeUndefined();
    expect((raw.session as Json).secrets).toBeUndefined();
    expect(((raw.session as Json).redis as Json | undefined)?.url).toBeUndefined();
  });

  it('an unedited Secret is refused at startup: placeholders say REPLACE-ME and the session secret placeholder is too short', () => {
    const { raw } = k8sConfigFile();
    const secret = named<Secret>('Secret', envValue(tokenHandler(), 'TH_SESSION_SECRETS')!.valueFrom!.secretKeyRef!.name);
    expect(secretValue(secret, 'oidc-client-secret')).toMatch(/REPLACE-ME/);
    expect(secretValue(secret, 'session-secrets')).toMatch(/REPLACE-ME/);
    const env = k8sEnv((ref) => secretValue(named<Secret>('Secret', ref.name), ref.key) ?? '');
    const problems = problemsOf(() => parseConfig(raw, env));
    expect(problems).toEqual([expect.stringMatching(/^session\.secrets\[0\] \(from TH_SESSION_SECRETS\): is \d+ characters long; each secret must be at least 32 characters/)]);
  });

  it("the ConfigMap's token-handler.yaml, with the Secret's variables set, passes token-handler's configuration validation", () => {
    const { raw } = k8sConfigFile();
    const env = k8sEnv((_ref, variable) => {
      const value = TEST_VALUES[variable];
      if (value === undefined) throw new Error(`no test value for ${variable}`);
      return value;
    });
    const config = parseConfig(raw, env);
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8080, trustProxy: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'] });
    expect(config.session.store).toBe('redis');
    expect(config.session.redis?.url).toBe(TEST_VALUES.TH_SESSION_REDIS_URL);
    expect(config.session.secrets).toHaveLength(2);
    expect(config.oidc.clientSecret).toBe(TEST_VALUES.TH_OIDC_CLIENT_SECRET);
    expect(config.routes[0]).toMatchObject({ prefix: '/api', upstream: 'http://127.0.0.1:9500', token: 'user' });
    expect(config.metrics.port).toBe(9090);
    expect(config.shutdown.gracePeriodSeconds).toBe(25);
  });

  it('two replicas share sessions: more than one replica only with session.store redis, and the Redis URL names a Service defined here', () => {
    const deployment = appDeployment();
    const { raw } = k8sConfigFile();
    if ((deployment.spec.replicas ?? 1) > 1) expect((raw.session as Json).store).toBe('redis');
    const ref = envValue(tokenHandler(), 'TH_SESSION_REDIS_URL')!.valueFrom!.secretKeyRef!;
    const url = new URL(secretValue(named<Secret>('Secret', ref.name), ref.key)!);
    expect(url.protocol).toMatch(/^rediss?:$/);
    const redis = named<Service>('Service', url.hostname);
    expect(redis.spec.ports.map((p) => p.port)).toContain(Number(url.port || 6379));
  });

  it("the Service sends traffic to token-handler's port 8080 only, never to the API's 9500", () => {
    const deployment = appDeployment();
    const th = tokenHandler();
    const podLabels = deployment.spec.template.metadata.labels ?? {};
    const selecting = ofKind<Service>('Service').filter((s) => Object.entries(s.spec.selector).every(([k, v]) => podLabels[k] === v));
    expect(selecting.length).toBeGreaterThan(0);
    for (const service of selecting) {
      for (const port of service.spec.ports) {
        const target = portNumber(th, port.targetPort ?? port.port);
        expect(target, `${service.metadata.name}:${port.port} targets a token-handler port`).toBeDefined();
        expect(target).not.toBe(9500);
      }
    }
    const app = named<Service>('Service', 'my-app');
    expect(app.spec.ports.map((p) => portNumber(th, p.targetPort ?? p.port))).toEqual([8080]);
  });

  it('metrics are served only on their own port 9090, which the metrics Service and the scrape annotations name', () => {
    const th = tokenHandler();
    const { raw } = k8sConfigFile();
    const metricsPort = (raw.metrics as { port?: number } | undefined)?.port;
    expect(metricsPort).toBe(9090);
    expect(metricsPort).not.toBe((raw.listen as { port: number }).port);
    expect(portNumber(th, 'metrics')).toBe(metricsPort);
    const annotations = appDeployment().spec.template.metadata.annotations ?? {};
    expect(annotations['prometheus.io/port']).toBe(String(metricsPort));
    expect(annotations['prometheus.io/path']).toBe('/metrics');
    const metricsService = named<Service>('Service', 'my-app-metrics');
    expect(metricsService.spec.ports.map((p) => portNumber(th, p.targetPort ?? p.port))).toEqual([metricsPort]);
  });

  it("the Ingress sends only /auth and the configured route prefixes to token-handler, never /metrics or the probes", () => {
    const { raw } = k8sConfigFile();
    const prefixes = (raw.routes as Array<{ prefix: string }>).map((r) => r.prefix);
    for (const ingress of ofKind<Ingress>('Ingress')) {
      const toTokenHandler = ingress.spec.rules
        .flatMap((rule) => rule.http.paths)
        .filter((p) => p.backend.service.name === 'my-app')
        .map((p) => p.path);
      expect(toTokenHandler.sort()).toEqual(['/auth', ...prefixes].sort());
      for (const path of ingress.spec.rules.flatMap((rule) => rule.http.paths)) {
        expect(path.backend.service.name, `${path.path} goes nowhere near the metrics Service`).not.toBe('my-app-metrics');
      }
    }
  });

  it('the file named by TH_CONFIG is the ConfigMap key mounted read-only into token-handler', () => {
    const th = tokenHandler();
    expect(envValue(th, 'TH_CONFIG')?.value).toBe('/config/token-handler.yaml');
    const { configMap, key } = k8sConfigFile();
    expect(configMap.metadata.name).toBe('my-app-token-handler');
    expect(key).toBe('token-handler.yaml');
    expect(th.volumeMounts?.find((m) => m.mountPath === '/config')?.readOnly).toBe(true);
  });

  it('Service links cannot inject stray TH_* variables into the pod', () => {
    // A Service named th-metrics would inject TH_METRICS_PORT=tcp://..., which
    // token-handler reads as metrics.port and refuses.
    for (const d of ofKind<Deployment>('Deployment')) expect(d.spec.template.spec.enableServiceLinks, d.metadata.name).toBe(false);
    for (const s of ofKind<Service>('Service')) expect(s.metadata.name).not.toMatch(/^th-/);
  });
});

// ---------------------------------------------------------------------------
// docker compose
// ---------------------------------------------------------------------------

describe('docker compose example (config/docker-compose.yaml)', () => {
  const children: Array<ReturnType<typeof spawn>> = [];
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  it('declares token-handler, redis and the example api', () => {
    expect(Object.keys(compose().services).sort()).toEqual(['api', 'redis', 'token-handler']);
    expect(composeService('redis').image).toMatch(/^redis:7-alpine$/);
  });

  it("publishes only token-handler's port 8080 on the host; redis, the api and metrics stay on the compose network", () => {
    const published = Object.entries(compose().services).flatMap(([name, s]) => publishedPorts(s).map((p) => ({ name, ...p })));
    expect(published).toEqual([{ name: 'token-handler', published: '8080', target: '8080' }]);
  });

  it('token-handler starts only once Redis (and the api) report healthy', () => {
    const deps = dependsOn(composeService('token-handler'));
    expect(deps.redis?.condition).toBe('service_healthy');
    expect(healthcheckCommand(composeService('redis')).join(' ')).toMatch(/redis-cli ping/);
    if (deps.api) {
      expect(deps.api.condition).toBe('service_healthy');
      expect(healthcheckCommand(composeService('api')).length).toBeGreaterThan(0);
    }
  });

  it("token-handler's healthcheck fetches /healthz with node (the image has no curl)", () => {
    const [kind, ...command] = healthcheckCommand(composeService('token-handler'));
    expect(kind).toBe('CMD');
    expect(command[0]).toBe('node');
    expect(command[1]).toBe('-e');
    const script = command[2] ?? '';
    expect(script).toContain("fetch('http://127.0.0.1:8080/healthz')");
    expect(() => new Script(script)).not.toThrow();
    expect(() => interpolate(script, {})).not.toThrow(); // no stray $ for compose to expand
  });

  it('token-handler is built from the repository Dockerfile and reads config/compose/token-handler.yaml via TH_CONFIG', () => {
    const build = composeService('token-handler').build;
    const context = resolve(COMPOSE_DIR, typeof build === 'string' ? build : (build?.context ?? '.'));
    const dockerfile = typeof build === 'object' && build.dockerfile ? build.dockerfile : 'Dockerfile';
    expect(context).toBe(resolve(ROOT));
    expect(existsSync(join(context, dockerfile))).toBe(true);
    const { target } = composeConfigFile();
    expect(target).toBe('/config/token-handler.yaml');
    const mount = (composeService('token-handler').volumes ?? []).find((v) => typeof v === 'string' && v.includes(target)) as string;
    expect(resolve(COMPOSE_DIR, mount.split(':')[0]!)).toBe(join(ROOT, 'config/compose/token-handler.yaml'));
    expect(mount.endsWith(':ro')).toBe(true);
  });

  it('compose refuses to start without the issuer, client ID, client secret and session secrets', () => {
    const env = composeEnvironment(composeService('token-handler'));
    for (const name of ['TH_OIDC_ISSUER', 'TH_OIDC_CLIENT_ID', 'TH_OIDC_CLIENT_SECRET', 'TH_SESSION_SECRETS']) {
      expect(env[name], name).toMatch(new RegExp(`^\\$\\{${name}:\\?.+\\}$`));
      const missing = { ...TEST_VALUES, [name]: undefined };
      expect(() => interpolate(env[name]!, missing)).toThrow(name);
    }
  });

  it('the mounted config, with the variables compose passes, passes token-handler configuration validation', () => {
    const { raw } = composeConfigFile();
    const env = Object.fromEntries(
      Object.entries(composeEnvironment(composeService('token-handler'))).map(([k, v]) => [k, interpolate(v, TEST_VALUES)]),
    );
    const config = parseConfig(raw, env);
    expect(config.publicUrl).toBe('http://localhost:8080');
    expect(config.listen.port).toBe(8080);
    expect(config.oidc.issuer).toBe(TEST_VALUES.TH_OIDC_ISSUER);
    expect(config.session.store).toBe('redis');
    expect(new URL(config.session.redis!.url!).hostname).toBe('redis');
    expect(config.routes).toEqual([expect.objectContaining({ prefix: '/api', upstream: 'http://api:9500' })]);
    expect(Object.keys(compose().services)).toContain(new URL(config.routes[0]!.upstream!).hostname);
    expect(config.metrics.port).toBe(9090);
    expect(config.shutdown.gracePeriodSeconds).toBe(25);
  });

  it('`docker compose stop` waits longer than token-handler drains (stop_grace_period > shutdown.gracePeriodSeconds)', () => {
    const grace = gracePeriodOf(composeConfigFile().raw);
    const stop = composeService('token-handler').stop_grace_period;
    expect(stop).toBeDefined();
    expect(durationSeconds(stop!)).toBeGreaterThan(grace);
  });

  it('the example api reports whether a bearer token arrived and its unverified claims, without echoing the token', async () => {
    const api = composeService('api');
    const command = api.command as string[];
    expect(command.slice(0, 2)).toEqual(['node', '-e']);
    const script = interpolate(command[2]!, {}); // what compose hands to node
    const port = await freePort();
    const child = spawn(process.execPath, ['-e', script], { env: { PATH: process.env.PATH ?? '', PORT: String(port) }, stdio: 'ignore' });
    children.push(child);
    const claims = { sub: 'alice', aud: 'my-api' };
    const token = `eyJhbGciOiJub25lIn0.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.signature`;
    let response: Response | undefined;
    for (let attempt = 0; attempt < 100 && !response; attempt++) {
      response = await fetch(`http://127.0.0.1:${port}/orders?x=1`, { headers: { authorization: `Bearer ${token}` } }).catch(async () => {
        await new Promise((r) => setTimeout(r, 50));
        return undefined;
      });
    }
    expect(response?.status).toBe(200);
    const text = await response!.text();
    expect(JSON.parse(text)).toEqual({ method: 'GET', path: '/orders?x=1', bearerToken: true, unverifiedClaims: claims });
    expect(text).not.toContain(token.split('.')[1]!);
    const anonymous = await fetch(`http://127.0.0.1:${port}/`);
    expect(await anonymous.json()).toMatchObject({ bearerToken: false, unverifiedClaims: null });
  });
});

// ---------------------------------------------------------------------------
// Both
// ---------------------------------------------------------------------------

describe('configuration variables in the examples', () => {
  it('every TH_* variable the examples set, interpolate or mention is one token-handler knows', () => {
    const used = new Map<string, string>();
    for (const d of ofKind<Deployment>('Deployment')) {
      for (const c of d.spec.template.spec.containers) for (const e of c.env ?? []) used.set(e.name, `${d.file} (${c.name})`);
    }
    for (const [name, service] of Object.entries(compose().services)) {
      for (const [key, value] of Object.entries(composeEnvironment(service))) {
        used.set(key, `docker-compose.yaml (${name})`);
        for (const [, ref] of value.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)) used.set(ref!, `docker-compose.yaml (${name}: \${${ref}})`);
      }
    }
    // Comments and ConfigMap text too: an operator copies names from there.
    const files = [...k8sFiles, COMPOSE_FILE, join(ROOT, 'config/compose/token-handler.yaml')];
    for (const file of files) {
      for (const [name] of readFileSync(file, 'utf8').matchAll(/\bTH_[A-Z0-9_]*[A-Z0-9]\b/g)) used.set(name, file);
    }
    const unknown = [...used].filter(([name]) => name.startsWith('TH_') && !KNOWN_VARIABLES.has(name));
    expect(unknown.map(([name, where]) => `${name} in ${where}`)).toEqual([]);
    expect(used.has('TH_CONFIG')).toBe(true);
  });
});
