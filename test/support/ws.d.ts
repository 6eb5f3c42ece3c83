// Minimal ambient typings for `ws` 8 (installed for @fastify/http-proxy's WebSocket support;
// @types/ws is not installed): only what the SPA dev server, the WebSocket upstream and their
// tests use. If @types/ws is ever added as a devDependency, delete this file.
declare module 'ws' {
  import type { IncomingMessage } from 'node:http';
  import type { Duplex } from 'node:stream';

  export class WebSocket {
    static readonly CONNECTING: 0;
    static readonly OPEN: 1;
    static readonly CLOSING: 2;
    static readonly CLOSED: 3;
    constructor(url: string, protocols?: string | string[], options?: { headers?: Record<string, string>; maxPayload?: number });
    readonly protocol: string;
    readonly readyState: 0 | 1 | 2 | 3;
    send(data: string | Buffer): void;
    close(code?: number, reason?: string): void;
    terminate(): void;
    ping(): void;
    on(event: 'open', listener: () => void): this;
    on(event: 'close', listener: (code: number, reason: Buffer) => void): this;
    on(event: 'message', listener: (data: Buffer) => void): this;
    on(event: 'ping' | 'pong', listener: (data: Buffer) => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
    on(event: 'unexpected-response', listener: (req: unknown, res: IncomingMessage) => void): this;
    on(event: 'upgrade', listener: (res: IncomingMessage) => void): this;
    once(event: 'open', listener: () => void): this;
    once(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  }

  export class WebSocketServer {
    constructor(options: { noServer: true; maxPayload?: number; handleProtocols?: (protocols: Set<string>, request: IncomingMessage) => string | false });
    readonly clients: Set<WebSocket>;
    handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, done: (ws: WebSocket) => void): void;
    close(): void;
  }
}
