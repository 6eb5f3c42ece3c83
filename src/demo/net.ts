import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Everything the demo runs listens on the loopback interface only. */
export const LOOPBACK = '127.0.0.1';

export const loopbackUrl = (port: number) => `http://${LOOPBACK}:${port}`;

/** Listens on 127.0.0.1:`port` (0 = a free port) and resolves with the bound port. */
export function listenLoopback(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, LOOPBACK, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Closes the listener and its open (keep-alive) connections. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!server.listening) {
      server.closeAllConnections();
      resolve();
      return;
    }
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}

/**
 * A port on 127.0.0.1 that is free right now, or `port` itself after checking it is
 * free (so a busy port is reported before anything else starts). Racy by nature: only
 * for a port that must be known before its server can be built.
 */
export async function availablePort(port: number): Promise<number> {
  const probe = createServer();
  const bound = await listenLoopback(probe, port);
  await closeServer(probe);
  return bound;
}
