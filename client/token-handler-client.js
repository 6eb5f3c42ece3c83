/**
 * token-handler browser helper: a tiny, dependency-free ES module for pages served
 * behind token-handler (same origin). token-handler serves it at /auth/client.js, and
 * bundlers can import it as `token-handler/client`.
 *
 *   import { apiFetch, getUser, loginUrl, logout } from '/auth/client.js';
 *   const user = await getUser();              // the /auth/user JSON, or null when signed out
 *   if (!user) location.assign(loginUrl());    // sign in, then come back here
 *   const answer = await apiFetch('/api/orders');  // CSRF header + cookie; 401 login_required → sign-in
 *                                              // 401 step_up_required → a stronger sign-in (or onStepUpRequired)
 *   await logout();                            // ends the session, then the provider's logout page
 *   onSessionEvent((e) => { if (e.type === 'session-ended') showSignedOut(e.reason); });
 *   const live = openSocket('/api/live', { onMessage: (e) => show(e.data) });  // reconnects; 4401 → sign-in
 *
 * The page never sees a token: the session lives in an HttpOnly cookie and
 * token-handler attaches the access token when it proxies the call.
 */

const DEFAULT_CSRF_HEADER = 'x-csrf';
const DEFAULT_AUTH_PATH = '/auth';
const DEFAULT_POST_LOGOUT_PATH = '/';

/** An error answer from token-handler: `{ error, error_description }` and the HTTP status. */
export class TokenHandlerError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} description
   */
  constructor(status, code, description) {
    super(`${code}: ${description}`);
    this.name = 'TokenHandlerError';
    this.status = status;
    this.code = code;
    this.description = description;
  }
}

/**
 * @param {import('./token-handler-client.js').ClientOptions} [options]
 * @returns {import('./token-handler-client.js').TokenHandlerClient}
 */
export function createClient(options = {}) {
  const csrfHeader = (options.csrfHeader ?? DEFAULT_CSRF_HEADER).toLowerCase();
  const authPath = (options.authPath ?? DEFAULT_AUTH_PATH).replace(/\/+$/, '');
  const postLogoutPath = options.postLogoutPath ?? DEFAULT_POST_LOGOUT_PATH;
  const onLoginRequired = options.onLoginRequired;
  const onStepUpRequired = options.onStepUpRequired;
  const send = options.fetch ?? ((input, init) => globalThis.fetch(input, init));

  function currentLocation() {
    return globalThis.location;
  }

  /** Where to come back to after signing in: the current path, query and fragment. */
  function currentPath() {
    const where = currentLocation();
    return where ? `${where.pathname}${where.search}${where.hash}` : '/';
  }

  function loginUrl(returnTo = currentPath()) {
    return `${authPath}/login?returnTo=${encodeURIComponent(returnTo)}`;
  }

  function navigate(url) {
    const where = currentLocation();
    if (where) where.assign(url);
  }

  /** The CSRF header goes to our own origin only: another origin would just refuse the preflight. */
  function isSameOrigin(input) {
    const where = currentLocation();
    if (!where) return true;
    const raw = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    try {
      return new URL(raw, where.href).origin === where.origin;
    } catch {
      return false;
    }
  }

  /** The JSON error body of a 401 (login_required, step_up_required), read from a copy; null for anything else. */
  async function unauthorizedAnswer(response) {
    if (response.status !== 401) return null;
    if (!(response.headers.get('content-type') ?? '').toLowerCase().includes('json')) return null;
    try {
      const body = await response.clone().json();
      return body !== null && typeof body === 'object' && typeof body.error === 'string' ? body : null;
    } catch {
      return null;
    }
  }

  /**
   * The sign-in a step_up_required answer asks for, back to the current page. Built here from
   * `acr_values` and `max_age` (checked), never taken from the body's URL: an upstream could
   * answer with such a body too, and must not send the browser elsewhere.
   */
  function stepUpUrl(answer) {
    const query = new URLSearchParams();
    if (typeof answer.acr_values === 'string' && answer.acr_values !== '') query.set('acr_values', answer.acr_values);
    if (Number.isInteger(answer.max_age) && answer.max_age >= 0) query.set('max_age', String(answer.max_age));
    query.set('returnTo', currentPath());
    return `${authPath}/login?${query.toString()}`;
  }

  async function errorOf(response) {
    let code = 'http_error';
    let description = `token-handler answered ${response.status}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === 'string') code = body.error;
      if (body && typeof body.error_description === 'string') description = body.error_description;
    } catch {
      // not JSON: keep the generic text
    }
    return new TokenHandlerError(response.status, code, description);
  }

  async function apiFetch(input, init = {}) {
    // Like fetch: headers given in `init` replace those of a Request `input`.
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    if (isSameOrigin(input) && !headers.has(csrfHeader)) headers.set(csrfHeader, '1');
    const response = await send(input, { ...init, headers, credentials: init.credentials ?? 'same-origin' });
    // 403 insufficient_claims needs no sign-in: the response is the caller's to show.
    const answer = await unauthorizedAnswer(response);
    if (answer?.error === 'login_required') {
      const url = loginUrl();
      if (onLoginRequired) onLoginRequired({ response, loginUrl: url });
      else navigate(url);
    } else if (answer?.error === 'step_up_required') {
      const url = stepUpUrl(answer);
      const context = { response, loginUrl: url };
      if (typeof answer.acr_values === 'string') context.acrValues = answer.acr_values;
      if (Number.isInteger(answer.max_age)) context.maxAge = answer.max_age;
      if (onStepUpRequired) onStepUpRequired(context);
      else navigate(url);
    }
    return response;
  }

  async function authCall(method, name) {
    const headers = { accept: 'application/json' };
    if (method !== 'GET') headers[csrfHeader] = '1';
    return send(`${authPath}/${name}`, { method, headers, credentials: 'same-origin', cache: 'no-store' });
  }

  /** The session view, or null when signed out (401). */
  async function sessionView(method, name) {
    const response = await authCall(method, name);
    if (response.status === 401) {
      await response.text().catch(() => undefined); // done with it: let the connection go
      return null;
    }
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  async function logout() {
    const response = await authCall('POST', 'logout');
    if (!response.ok) throw await errorOf(response);
    const { logoutUrl } = await response.json();
    navigate(typeof logoutUrl === 'string' && logoutUrl !== '' ? logoutUrl : postLogoutPath);
    return { logoutUrl: typeof logoutUrl === 'string' ? logoutUrl : null };
  }

  const sessionListeners = new Set();
  let sessionEvents;

  /**
   * One `/auth/events` stream for all tabs of this origin where the browser can share it:
   * the tab holding a Web Lock reads the stream and relays each event over a
   * BroadcastChannel; when it closes, another tab takes the lock and the stream. Without
   * those APIs, each tab reads its own stream.
   */
  function startSessionEvents() {
    const deliver = (event) => {
      for (const listener of sessionListeners) {
        try {
          listener(event);
        } catch {
          // One listener's fault must not keep the event from the others.
        }
      }
    };
    const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel(`token-handler-events:${authPath}`) : null;
    const locks = globalThis.navigator?.locks;
    let source;
    let stopped = false;
    let releaseLock;
    const read = (relay) => {
      source = new EventSource(`${authPath}/events`, { withCredentials: true });
      for (const type of ['session-refreshed', 'session-expiring', 'session-ended']) {
        source.addEventListener(type, (message) => {
          let data = {};
          try {
            data = JSON.parse(message.data);
          } catch {
            // not JSON: deliver the type alone
          }
          const event = { type, ...data };
          deliver(event);
          if (relay) channel.postMessage(event);
          // The session is over: the stream has closed for good, no reconnect.
          if (type === 'session-ended') source.close();
        });
      }
    };
    if (channel && locks && typeof locks.request === 'function') {
      channel.onmessage = (message) => deliver(message.data);
      locks
        .request(`token-handler-events:${authPath}`, () => new Promise((resolve) => {
          if (stopped) {
            resolve();
            return;
          }
          releaseLock = resolve;
          read(true);
        }))
        .catch(() => undefined);
    } else {
      read(false);
    }
    return {
      close() {
        stopped = true;
        source?.close();
        channel?.close();
        releaseLock?.();
      },
    };
  }

  function onSessionEvent(listener) {
    sessionListeners.add(listener);
    sessionEvents ??= startSessionEvents();
    return () => {
      sessionListeners.delete(listener);
      if (sessionListeners.size === 0 && sessionEvents) {
        sessionEvents.close();
        sessionEvents = undefined;
      }
    };
  }

  /** Close codes after which a new socket is worth trying: the server went away, a network drop, the token expired. */
  const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013, 4001]);

  /**
   * A WebSocket to an API route (`websocket: true`) that lives as long as the session: it
   * reconnects with backoff after 1006 (connection lost), 4001 (token_expired: the new
   * upgrade carries a fresh token), 1001/1012/1013 (server restarting) and 1011; on 4401
   * (session_ended) it stops and goes to sign in (or calls `onSessionEnded`). A refused
   * upgrade reaches a browser only as 1006 before `open`: the session is then asked about,
   * and a signed-out one goes to sign in instead of retrying.
   */
  function openSocket(path, socketOptions = {}) {
    const Socket = socketOptions.WebSocket ?? globalThis.WebSocket;
    const minDelayMs = socketOptions.minDelayMs ?? 500;
    const maxDelayMs = socketOptions.maxDelayMs ?? 30_000;
    const maxRetries = socketOptions.maxRetries ?? Infinity;
    const where = currentLocation();
    const url = new URL(path, where ? where.href : 'http://localhost/');
    url.protocol = url.protocol === 'https:' ? 'wss:' : url.protocol === 'http:' ? 'ws:' : url.protocol;
    let socket;
    let retries = 0;
    let stopped = false;
    let timer;

    const sessionEnded = (event) => {
      stopped = true;
      const context = { loginUrl: loginUrl(), event };
      if (socketOptions.onSessionEnded) socketOptions.onSessionEnded(context);
      else navigate(context.loginUrl);
    };

    const retry = (event) => {
      if (stopped || retries >= maxRetries) return false;
      const backoff = Math.min(maxDelayMs, minDelayMs * 2 ** retries);
      // Jitter, so the tabs of a restarted server do not all come back at once.
      const delay = event.code === 4001 && retries === 0 ? 0 : backoff / 2 + Math.random() * (backoff / 2);
      retries++;
      timer = setTimeout(connect, delay);
      return true;
    };

    function connect() {
      timer = undefined;
      if (stopped) return;
      let opened = false;
      socket = socketOptions.protocols === undefined ? new Socket(url.href) : new Socket(url.href, socketOptions.protocols);
      if (socketOptions.binaryType) socket.binaryType = socketOptions.binaryType;
      socket.onopen = (event) => {
        opened = true;
        socketOptions.onOpen?.(event, socket);
      };
      socket.onmessage = (event) => socketOptions.onMessage?.(event);
      socket.onclose = (event) => {
        if (opened) retries = event.code === 4001 ? retries : 0;
        if (stopped) {
          socketOptions.onClose?.(event, { reconnecting: false });
          return;
        }
        if (event.code === 4401) {
          socketOptions.onClose?.(event, { reconnecting: false });
          sessionEnded(event);
          return;
        }
        if (event.code === 1006 && !opened) {
          // The upgrade was refused or never reached us: signed out, or worth another try?
          sessionView('GET', 'user').then(
            (view) => {
              if (stopped) return;
              if (view === null) {
                socketOptions.onClose?.(event, { reconnecting: false });
                sessionEnded(event);
              } else {
                socketOptions.onClose?.(event, { reconnecting: retry(event) });
              }
            },
            () => socketOptions.onClose?.(event, { reconnecting: retry(event) }),
          );
          return;
        }
        const reconnecting = RECONNECT_CODES.has(event.code) ? retry(event) : false;
        socketOptions.onClose?.(event, { reconnecting });
      };
    }

    connect();
    return {
      get socket() {
        return socket;
      },
      send(data) {
        if (!socket || socket.readyState !== 1) return false;
        socket.send(data);
        return true;
      },
      close(code = 1000, reason = '') {
        stopped = true;
        if (timer !== undefined) clearTimeout(timer);
        socket?.close(code, reason);
      },
    };
  }

  return {
    fetch: apiFetch,
    openSocket,
    onSessionEvent,
    getUser: () => sessionView('GET', 'user'),
    refresh: () => sessionView('POST', 'refresh'),
    logout,
    loginUrl,
  };
}

let defaultClient;
const byDefault = () => (defaultClient ??= createClient());

/** `fetch` for same-origin API calls through token-handler, with the default options. */
export const apiFetch = (input, init) => byDefault().fetch(input, init);
/** The signed-in user's claims and session times (`GET /auth/user`), or null when signed out. */
export const getUser = () => byDefault().getUser();
/** Ends the session (`POST /auth/logout`), then navigates to the provider's logout page or `/`. */
export const logout = () => byDefault().logout();
/** Forces a token refresh (`POST /auth/refresh`); resolves like getUser(). */
export const refresh = () => byDefault().refresh();
/** `/auth/login?returnTo=...` (default: back to the current page), for a sign-in link. */
export const loginUrl = (returnTo) => byDefault().loginUrl(returnTo);
/**
 * A WebSocket to `path` (same origin) that reconnects with backoff on 1006/4001 and goes
 * to sign in on 4401 session_ended; see TokenHandlerClient.openSocket.
 */
export const openSocket = (path, options) => byDefault().openSocket(path, options);
/**
 * Calls `listener` with every session event (`session-refreshed`, `session-expiring`,
 * `session-ended` with its `reason`), one stream shared by the tabs of this origin;
 * returns the function that stops listening.
 */
export const onSessionEvent = (listener) => byDefault().onSessionEvent(listener);
