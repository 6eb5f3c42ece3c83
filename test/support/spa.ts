/**
 * A SPA as token-handler sees one: a production build directory (what `vite build`
 * writes: index.html and hashed files under assets/) and a dev server that serves the
 * same page and pushes reloads over a WebSocket, as Vite's does for hot reload.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { closeServer, listen, originOf } from './ports.js';

/** The hashed script's name, as Vite names it (assets/[name]-[hash].js). */
export const ASSET = '/assets/index-B7xQ2kLm.js';

/**
 * The SPA's script: shows which client-side route it is on and who is signed in (from
 * /auth/user), offers sign-in that returns to this route, and can call the API.
 * Long enough to be worth compressing.
 */
export const SPA_SCRIPT = `// the SPA (a test build)
const out = document.getElementById('route');
out.textContent = location.pathname;
const who = document.getElementById('who');
fetch('/auth/user', { headers: { accept: 'application/json' } }).then(async (response) => {
  who.dataset.state = response.ok ? 'signed-in' : 'signed-out';
  who.textContent = response.ok ? (await response.json()).claims.sub : 'signed out';
});
document.getElementById('sign-in').href = '/auth/login?returnTo=' + encodeURIComponent(location.pathname + location.search);
window.callApi = async (path) => {
  const response = await fetch(path, { headers: { 'x-csrf': '1' } });
  return { status: response.status, type: response.headers.get('content-type'), body: await response.text() };
};
${'// padding so that the file is large enough to compress\n'.repeat(40)}`;

export function spaIndexHtml(script = ASSET, extraHead = ''): string {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>The SPA</title>${extraHead}<script type="module" src="${script}"></script></head>
<body><h1>The SPA</h1><p>Route: <span id="route"></span></p><p>User: <span id="who" data-state="loading">…</span></p><a id="sign-in" href="/auth/login">Sign in</a></body></html>`;
}

/** A production build in a new temporary directory; returns its path. */
export function writeSpaBuild(): string {
  const dir = mkdtempSync(join(tmpdir(), 'th-spa-'));
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), spaIndexHtml());
  writeFileSync(join(dir, ASSET), SPA_SCRIPT);
  writeFileSync(join(dir, 'robots.txt'), 'User-agent: *\nAllow: /\n');
  // Never served: secrets left in a build directory by mistake.
  writeFileSync(join(dir, '.env'), 'SECRET=do-not-serve\n');
  return dir;
}

export interface DevServer {
  url: string;
  /** Requests it received: path and headers (HTTP and WebSocket upgrades). */
  requests: Array<{ path: string; headers: IncomingMessage['headers']; upgrade: boolean }>;
  /** Tells every connected page to reload (what a dev server does when a file changes). */
  reload(): void;
  /** Pages connected for hot reload. */
  clients(): number;
  close(): Promise<void>;
}

/** The dev server's client: connects back over WebSocket (subprotocol as Vite's) and reloads when told. */
const HOT_CLIENT = `const socket = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/__hot', 'vite-hmr');
socket.addEventListener('open', () => { document.getElementById('hot').dataset.state = 'connected'; });
socket.addEventListener('message', (event) => { if (JSON.parse(event.data).type === 'full-reload') location.reload(); });
`;

/** A tiny dev server: the SPA for every page path (its own SPA fallback), the hot-reload client, and the WebSocket. */
export async function startDevServer(): Promise<DevServer> {
  const requests: DevServer['requests'] = [];
  let loads = 0;
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://dev.invalid').pathname;
    requests.push({ path, headers: req.headers, upgrade: false });
    if (path === '/@hot/client.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(HOT_CLIENT);
    } else if (path === ASSET) {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(SPA_SCRIPT);
    } else {
      loads += 1;
      const head = `<script type="module" src="/@hot/client.js"></script><meta name="load" content="${loads}">`;
      res.writeHead(200, { 'content-type': 'text/html' }).end(spaIndexHtml(ASSET, head).replace('</body>', `<p>Hot reload: <span id="hot">…</span> · load <span id="load">${loads}</span></p></body>`));
    }
  });
  const sockets = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has('vite-hmr') ? 'vite-hmr' : false) });
  const connected = new Set<WebSocket>();
  server.on('upgrade', (req, socket, head) => {
    requests.push({ path: req.url ?? '', headers: req.headers, upgrade: true });
    sockets.handleUpgrade(req, socket, head, (ws) => {
      connected.add(ws);
      ws.on('close', () => connected.delete(ws));
      ws.send(JSON.stringify({ type: 'connected' }));
    });
  });
  const port = await listen(server);
  return {
    url: originOf(port),
    requests,
    reload: () => connected.forEach((ws) => ws.send(JSON.stringify({ type: 'full-reload' }))),
    clients: () => connected.size,
    close: async () => {
      connected.forEach((ws) => ws.terminate());
      sockets.close();
      await closeServer(server);
    },
  };
}
