import type { Server } from 'node:http';
import { availablePort, closeServer as closeListener, listenLoopback, LOOPBACK, loopbackUrl } from '../../src/demo/net.js';

export { LOOPBACK };

/**
 * Listens on 127.0.0.1:`port` (0 = a free port chosen by the OS) and resolves with the bound port.
 * Prefer this over `freePort()` + listen, which is racy.
 */
export function listen(server: Server, port = 0): Promise<number> {
  return listenLoopback(server, port);
}

/**
 * Closes the listener AND every open socket, then waits a few milliseconds so that
 * in-process HTTP clients (undici's pool behind global `fetch`) see the FIN of their idle
 * keep-alive sockets and drop them. Without that pause, a request issued right after (e.g.
 * to a server restarted on the same port) may be written to a dead pooled socket and fail
 * with "other side closed".
 */
export async function closeServer(server: Server, settleMs = 20): Promise<void> {
  await closeListener(server);
  if (settleMs > 0) await new Promise((resolve) => setTimeout(resolve, settleMs));
}

/** A port that was free a moment ago (racy: only use it when a port must be known before listening). */
export function freePort(): Promise<number> {
  return availablePort(0);
}

export const originOf = loopbackUrl;
