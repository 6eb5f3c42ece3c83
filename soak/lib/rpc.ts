/**
 * A tiny request/response protocol over a forked child's IPC channel, so the soak can
 * keep the OpenID provider and the upstream API in a process of their own (its own
 * event loop, its own core) and stop/start the provider from the orchestrator.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

interface RpcRequest {
  id: number;
  method: string;
  params: unknown;
}

interface RpcResponse {
  id: number;
  result?: unknown;
  error?: string;
}

type Handlers = Record<string, (params: never) => unknown>;

/** In a child: answer the parent's calls with these handlers. The parent going away ends the child. */
export function serve(handlers: Handlers): void {
  if (!process.send) throw new Error('serve() must run in a forked child (no IPC channel)');
  process.on('message', (message: RpcRequest) => {
    const reply = (response: RpcResponse) => process.send?.(response);
    const handler = handlers[message.method];
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
  process.on('disconnect', () => process.exit(0));
}

export interface Child {
  process: ChildProcess;
  call<T>(method: string, params?: unknown, timeoutMs?: number): Promise<T>;
  /** Asks nicely (disconnect), then SIGKILLs after `graceMs`. Only ever this child's own pid. */
  stop(graceMs?: number): Promise<void>;
}

/** Forks `file` (relative to this module) under tsx. */
export function spawnChild(file: string): Child {
  const path = fileURLToPath(new URL(file, import.meta.url));
  const child = fork(path, [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  });
  let next = 1;
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  child.on('message', (message: RpcResponse) => {
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
    call<T>(method: string, params?: unknown, timeoutMs = 20_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const id = next++;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${file}: ${method} did not answer within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
        child.send({ id, method, params } satisfies RpcRequest);
      });
    },
    async stop(graceMs = 3000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (child.connected) child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
