/**
 * A tiny request/response protocol over a forked child's IPC channel, so the benchmark
 * and the soak can keep the provider, the upstream, the load generator and the memory
 * probe in processes of their own (each gets its own event loop and its own GC).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

interface Request {
  id: number;
  method: string;
  params: unknown;
}

interface Response {
  id: number;
  result?: unknown;
  error?: string;
}

type Handlers = Record<string, (params: never) => unknown>;

/** In a child: answer the parent's calls with these handlers. */
export function serve(handlers: Handlers): void {
  if (!process.send) throw new Error('serve() must run in a forked child (no IPC channel)');
  process.on('message', (message: Request) => {
    const handler = handlers[message.method];
    const reply = (response: Response) => process.send?.(response);
    if (!handler) {
      reply({ id: message.id, error: `unknown method ${message.method}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(message.params as never))
      .then(
        (result) => reply({ id: message.id, result: result ?? null }),
        (err: unknown) => reply({ id: message.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
  });
  // The parent going away ends the child: no orphans.
  process.on('disconnect', () => process.exit(0));
}

export interface Child {
  process: ChildProcess;
  /** `timeoutMs` overrides the child's default (none unless `callTimeoutMs` was given). */
  call<T>(method: string, params?: unknown, timeoutMs?: number): Promise<T>;
  /** Asks the child to exit and waits for it (kills it after `graceMs`). */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  nodeFlags?: string[];
  env?: NodeJS.ProcessEnv;
  /** Default time a call may take before it is refused (none by default: storms are long). */
  callTimeoutMs?: number;
}

/** Forks `file` under tsx: a URL, or a path relative to bench/lib/. */
export function spawnChild(file: string | URL, options: SpawnOptions = {}): Child {
  const path = fileURLToPath(typeof file === 'string' ? new URL(file, import.meta.url) : file);
  const child = fork(path, [], {
    execArgv: ['--import', 'tsx', ...(options.nodeFlags ?? [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...options.env },
    serialization: 'advanced',
  });
  let next = 1;
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void; timer?: NodeJS.Timeout }>();
  child.on('message', (message: Response) => {
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    clearTimeout(waiter.timer);
    if (message.error !== undefined) waiter.reject(new Error(`${file}: ${message.error}`));
    else waiter.resolve(message.result);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', (code, signal) => {
    for (const waiter of pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error(`${file} exited (code ${code}, signal ${signal})`));
    }
    pending.clear();
  });
  return {
    process: child,
    call<T>(method: string, params?: unknown, timeoutMs = options.callTimeoutMs): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const id = next++;
        const timer =
          timeoutMs === undefined
            ? undefined
            : setTimeout(() => {
                pending.delete(id);
                reject(new Error(`${file}: ${method} did not answer within ${timeoutMs} ms`));
              }, timeoutMs);
        pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
        child.send({ id, method, params } satisfies Request);
      });
    },
    async stop(graceMs = 3000): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (child.connected) child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
