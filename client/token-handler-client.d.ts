/**
 * token-handler browser helper (served at /auth/client.js, importable as `token-handler/client`).
 * The page never holds a token: these calls ride on token-handler's HttpOnly session cookie.
 */

/** What `GET /auth/user` and `POST /auth/refresh` answer: claims and session times, never a token. */
export interface SessionView {
  /** ID-token claims of the signed-in user (`sub`, and `name`, `email`, ... when the provider releases them). */
  claims: Record<string, unknown>;
  session: {
    /** ISO 8601 times. */
    createdAt: string;
    lastSeenAt: string;
    idleExpiresAt: string;
    absoluteExpiresAt: string;
    accessTokenExpiresAt: string;
    /** Time of the last refresh of the access token, or null when it was never refreshed. */
    refreshedAt: string | null;
    /** Granted scope (space-separated), when the provider said. */
    scope: string | null;
  };
}

export interface LoginRequiredContext {
  /** The 401 `login_required` answer (its body is still unread). */
  response: Response;
  /** `/auth/login?returnTo=<current path, query and fragment>`: where the default handler goes. */
  loginUrl: string;
}

export interface StepUpRequiredContext {
  /** The 401 `step_up_required` answer (its body is still unread). */
  response: Response;
  /** `/auth/login?acr_values=...&max_age=...&returnTo=<current page>`: where the default handler goes. */
  loginUrl: string;
  /** The acr values the route accepts (space-separated), when a stronger sign-in is needed. */
  acrValues?: string;
  /** The most seconds since sign-in the route accepts, when a more recent sign-in is needed. */
  maxAge?: number;
}

export interface ClientOptions {
  /** Name of the CSRF header (token-handler's `csrf.header`). Default `x-csrf`; the value is always `1`. */
  csrfHeader?: string;
  /** Where token-handler's `/auth` routes are. Default `/auth`. */
  authPath?: string;
  /**
   * Called when an API call answers 401 `login_required`, instead of navigating to
   * `loginUrl`. The call still resolves with that response.
   */
  onLoginRequired?: (context: LoginRequiredContext) => void;
  /**
   * Called when an API call answers 401 `step_up_required` (the route needs a stronger or
   * more recent sign-in), instead of navigating to `loginUrl` — e.g. to ask the user first.
   * The call still resolves with that response.
   */
  onStepUpRequired?: (context: StepUpRequiredContext) => void;
  /** Where `logout()` goes when the provider has no logout page. Default `/`. */
  postLogoutPath?: string;
  /** The fetch to use. Default `globalThis.fetch`. */
  fetch?: (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;
}

/** What `onSessionEnded` of `openSocket` is told. */
export interface SocketSessionEndedContext {
  /** `/auth/login?returnTo=<current page>`: where the default handler goes. */
  loginUrl: string;
  /** The close event: 4401 `session_ended`, or 1006 for an upgrade refused because the session is gone. */
  event: CloseEvent;
}

export interface SocketOptions {
  /** Subprotocols asked for on every (re)connection. */
  protocols?: string | string[];
  binaryType?: BinaryType;
  /** Called on every open (the first and each reconnection) with the new WebSocket. */
  onOpen?: (event: Event, socket: WebSocket) => void;
  onMessage?: (event: MessageEvent) => void;
  /** Called on every close; `reconnecting` says whether a new socket will be tried. */
  onClose?: (event: CloseEvent, state: { reconnecting: boolean }) => void;
  /** Called when the session ended (4401), instead of navigating to `loginUrl`. */
  onSessionEnded?: (context: SocketSessionEndedContext) => void;
  /** First reconnection delay, doubled each time up to `maxDelayMs` (with jitter). Default 500. */
  minDelayMs?: number;
  /** Default 30000. */
  maxDelayMs?: number;
  /** Reconnections tried in a row before giving up. Default unlimited. */
  maxRetries?: number;
  /** The WebSocket class. Default `globalThis.WebSocket`. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

/** The socket `openSocket` keeps open: the current WebSocket changes with each reconnection. */
export interface ManagedSocket {
  readonly socket: WebSocket | undefined;
  /** Sends on the current socket; false (nothing sent) while it is not open. */
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): boolean;
  /** Closes it for good: no reconnection. */
  close(code?: number, reason?: string): void;
}

export interface TokenHandlerClient {
  /**
   * A WebSocket to an API route with `websocket: true` (same origin: `ws:`/`wss:` of the
   * page's origin). Reconnects with backoff after 1006 (connection lost), 4001
   * `token_expired` (at once, the first time: the new upgrade carries a fresh token),
   * 1001/1012/1013 (server going away) and 1011; stops on 4401 `session_ended` and goes to
   * sign in (or calls `onSessionEnded`). A browser is never shown why an upgrade was refused
   * (it sees 1006 before `open`): the helper then asks `GET /auth/user`, and a signed-out
   * session goes to sign in rather than retrying. Other codes (1000, 1008, 1009, the API's
   * own) end it and go to `onClose`.
   */
  openSocket(path: string, options?: SocketOptions): ManagedSocket;
  /**
   * `fetch` for API calls through token-handler: adds the CSRF header (same-origin URLs only)
   * and `credentials: 'same-origin'` (unless `init.credentials` says otherwise). A 401
   * `login_required` answer sends the browser to sign in, then back to the current page (or
   * calls `onLoginRequired`); a 401 `step_up_required` answer sends it to sign in again with
   * the `acr_values`/`max_age` the route needs (or calls `onStepUpRequired`); a 403
   * `insufficient_claims` answer (the user may not use this API) is only handed back. The
   * promise resolves with the response in every case.
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** `GET /auth/user`: the session view, or null when signed out. Other failures throw TokenHandlerError. */
  getUser(): Promise<SessionView | null>;
  /** `POST /auth/refresh`: refreshes the tokens now; the new session view, or null when signed out. */
  refresh(): Promise<SessionView | null>;
  /**
   * `POST /auth/logout`, then navigates to the provider's logout page (`logoutUrl`) or to
   * `postLogoutPath` when there is none. Resolves with what token-handler answered.
   */
  logout(): Promise<{ logoutUrl: string | null }>;
  /** `/auth/login?returnTo=...` for a sign-in link; `returnTo` defaults to the current page. */
  loginUrl(returnTo?: string): string;
  /**
   * Session events from `GET /auth/events`, one stream shared by every tab of this origin
   * (Web Locks + BroadcastChannel; a stream per tab where those are missing). Returns the
   * function that stops listening.
   */
  onSessionEvent(listener: (event: SessionEvent) => void): () => void;
}

/** What `GET /auth/events` tells a page. */
export type SessionEvent =
  | { type: 'session-refreshed'; accessTokenExpiresAt: string }
  | { type: 'session-expiring'; idleExpiresAt: string }
  | { type: 'session-ended'; reason: 'logout' | 'backchannel' | 'timeout' | 'revoked' | 'ended-elsewhere' };

/** token-handler's error answer (`{ error, error_description }`) with its HTTP status. */
export declare class TokenHandlerError extends Error {
  constructor(status: number, code: string, description: string);
  readonly status: number;
  /** e.g. `csrf_failed`, `idp_unavailable`, `session_store_unavailable`. */
  readonly code: string;
  readonly description: string;
}

export declare function createClient(options?: ClientOptions): TokenHandlerClient;

/** `createClient().fetch` with the default options. */
export declare function apiFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
/** `createClient().getUser` with the default options. */
export declare function getUser(): Promise<SessionView | null>;
/** `createClient().logout` with the default options. */
export declare function logout(): Promise<{ logoutUrl: string | null }>;
/** `createClient().refresh` with the default options. */
export declare function refresh(): Promise<SessionView | null>;
/** `createClient().loginUrl` with the default options. */
export declare function loginUrl(returnTo?: string): string;
/** Session events with the default client; returns the function that stops listening. */
/** `openSocket` of the default client. */
export declare function openSocket(path: string, options?: SocketOptions): ManagedSocket;

export declare function onSessionEvent(listener: (event: SessionEvent) => void): () => void;
