/**
 * A WebSocket echo API in a process of its own, for the WebSocket figure of `npm run bench`:
 * an upgrade without `Authorization: Bearer …` gets 401 (the token is not introspected: the
 * figure is about passing messages on, not about the API's token check); every message is
 * sent back as it came.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { serve } from './rpc.js';

const wss = new WebSocketServer({ noServer: true });
const server = createServer((_req, res) => res.writeHead(426).end());
server.on('upgrade', (req, socket, head) => {
  if (!/^Bearer \S+$/.test(req.headers.authorization ?? '')) {
    socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws: WebSocket) => ws.on('message', (data) => ws.send(data)));
});

serve({
  async start() {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  },
  async stop() {
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => server.close(resolve));
  },
});
