// Minimal ambient typings for `ws` 8 (installed for @fastify/http-proxy's WebSocket support;
// @types/ws is not installed): only what the SPA dev server and its tests use. If @types/ws
// is ever added as a devDependency, delete this file.
declare module 'ws' {
  import type { IncomingMessage } from 'node:http';
  import type { Duplex } from 'node:stream';

  export class WebSocket {
    constructor(url: string, protocols?: string | string[], options?: { headers?: Record<string, string> });
    readonly protocol: string;
    send(data: string): void;
    close(): void;
    terminate(): void;
    on(event: 'open' | 'close', listener: () => void): this;
    on(event: 'message', listener: (data: Buffer) => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
    on(event: 'unexpected-response', listener: (req: unknown, res: IncomingMessage) => void): this;
  }

  export class WebSocketServer {
    constructor(options: { noServer: true; handleProtocols?: (protocols: Set<string>, request: IncomingMessage) => string | false });
    handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, done: (ws: WebSocket) => void): void;
    close(): void;
  }
}
