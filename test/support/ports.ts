import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export const LOOPBACK = '127.0.0.1';

/**
 * Listens on 127.0.0.1:`port` (0 = a free port chosen by the OS) and resolves with the bound port.
 * Prefer this over `freePort()` + listen, which is racy.
 */
export function listen(server: Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, LOOPBACK, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Closes the listener AND every open socket (keep-alive sockets from `fetch` would otherwise keep a
 * "closed" server reachable and keep `close()` pending forever), then waits a few milliseconds so
 * that in-process HTTP clients (undici's pool behind global `fetch`) see the FIN of their idle
 * keep-alive sockets and drop them. Without that pause, a request issued right after (e.g. to a
 * server restarted on the same port) may be written to a dead pooled socket and fail with
 * "other side closed".
 */
export async function closeServer(server: Server, settleMs = 20): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    if (!server.listening) {
      server.closeAllConnections();
      resolve();
      return;
    }
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
  if (settleMs > 0) await new Promise((resolve) => setTimeout(resolve, settleMs));
}

/** A port that was free a moment ago (racy: only use it when a port must be known before listening). */
export async function freePort(): Promise<number> {
  const server = createServer();
  const port = await listen(server, 0);
  await closeServer(server);
  return port;
}

export function originOf(port: number): string {
  return `http://${LOOPBACK}:${port}`;
}
