/**
 * A real WebSocket API (the `ws` package on node:http, 127.0.0.1) that, like the HTTP test
 * upstream, checks `Authorization: Bearer <token>` on the upgrade at the provider's
 * introspection endpoint: a missing or inactive token gets 401 and no socket.
 *
 * Paths (the end of the path, with or without the BFF's prefix):
 *   .../echo        every message is sent back as it came
 *   .../hello       sends `{"hello":<sub>}` once open, then echoes
 *   .../big?n=N     sends one message of N bytes once open
 *   .../slow?ms=N   checks the token, then waits N ms before answering the upgrade
 * Records every upgrade (headers, path, whether the token was active) and every server-side
 * socket's close (code, reason), so tests can see the upstream side close.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import { closeServer, listen, originOf } from './ports.js';

export interface WsUpgradeRecord {
  path: string;
  headers: IncomingHttpHeaders;
  tokenActive: boolean;
  sub?: string;
  /** Filled when this upgrade's socket closed (server side). */
  closed?: { code: number; reason: string; at: number };
}

export interface WsUpstream {
  /** http://127.0.0.1:PORT (the BFF's route upstream) */
  url: string;
  upgrades: WsUpgradeRecord[];
  /** Sockets open on the upstream side now. */
  openSockets(): number;
  close(): Promise<void>;
}

export async function startWsUpstream(provider: { endpoints: { introspection: string }; clients: { api: { clientId: string; clientSecret: string } } }): Promise<WsUpstream> {
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(provider.clients.api.clientId)}:${encodeURIComponent(provider.clients.api.clientSecret)}`).toString('base64')}`;
  const upgrades: WsUpgradeRecord[] = [];
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 });
  const server = createServer((_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('WebSocket only'));

  async function introspect(token: string): Promise<Record<string, unknown>> {
    const response = await fetch(provider.endpoints.introspection, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ token }).toString(),
    });
    return (await response.json()) as Record<string, unknown>;
  }

  server.on('upgrade', (req, socket, head) => {
    const record: WsUpgradeRecord = { path: req.url ?? '/', headers: req.headers, tokenActive: false };
    upgrades.push(record);
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    void (match ? introspect(match[1]!) : Promise.resolve<Record<string, unknown>>({ active: false })).then(
      (result) => {
        if (result.active !== true) {
          socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Bearer error="invalid_token"\r\nConnection: close\r\n\r\n{"error":"invalid_token"}');
          return;
        }
        record.tokenActive = true;
        if (typeof result.sub === 'string') record.sub = result.sub;
        const delayMs = req.url?.includes('/slow') ? Number(new URL(req.url, 'http://upstream.invalid').searchParams.get('ms') ?? '0') : 0;
        return new Promise((resolve) => setTimeout(resolve, delayMs)).then(() => wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
          ws.on('close', (code, reason) => {
            record.closed = { code, reason: reason.toString(), at: Date.now() };
          });
          const url = new URL(req.url ?? '/', 'http://upstream.invalid');
          if (url.pathname.endsWith('/hello')) ws.send(JSON.stringify({ hello: record.sub }));
          if (url.pathname.endsWith('/big')) ws.send(Buffer.alloc(Number(url.searchParams.get('n') ?? '0'), 120));
          ws.on('message', (data) => ws.send(data));
        }));
      },
      () => socket.destroy(),
    );
  });
  const port = await listen(server, 0);
  return {
    url: originOf(port),
    upgrades,
    openSockets: () => [...wss.clients].filter((ws) => ws.readyState === WebSocket.OPEN).length,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      await closeServer(server);
    },
  };
}
