// The demo page: everything goes through token-handler's browser helper. The page never
// sees a token: /auth/user answers claims and times, /api/* answers the API's JSON.
import { createClient, TokenHandlerError } from '/auth/client.js';

const $ = (id) => document.getElementById(id);

const state = {
  /** The last /auth/user (or /auth/refresh) answer, or null when signed out. */
  view: null,
  /** session.refreshedAt of that answer, to notice each refresh. */
  refreshedAt: null,
  refreshes: 0,
  autoTimer: undefined,
  /** Back from the provider's sign-out (the post-logout redirect carries ?signed-out). */
  justSignedOut: new URLSearchParams(location.search).has('signed-out'),
};

const th = createClient({
  // Show the signed-out state instead of jumping to the provider: it is a demo.
  onLoginRequired: () => showSignedOut('token-handler answered 401 login_required: there is no session.'),
});

// ---------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------
const clock = (date) => date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
const timeOf = (iso) => (iso ? clock(new Date(iso)) : '–');
const dateTimeOf = (iso) => (iso ? `${new Date(iso).toLocaleDateString()} ${timeOf(iso)}` : '–');

function describeError(err) {
  if (err instanceof TokenHandlerError) return `${err.status} ${err.code}: ${err.description}`;
  return err instanceof Error ? err.message : String(err);
}

function log(text, kind = '') {
  const item = document.createElement('li');
  if (kind) item.className = kind;
  const time = document.createElement('time');
  time.textContent = clock(new Date());
  const span = document.createElement('span');
  span.textContent = text;
  item.append(time, span);
  $('events').prepend(item);
}

// ---------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------
function displayName(claims) {
  return typeof claims.name === 'string' && claims.name ? claims.name : String(claims.sub ?? 'someone');
}

/** Takes a session view; notices a refresh by a changed session.refreshedAt. */
function applyView(view, reason) {
  const first = state.view === null;
  const refreshedAt = view.session.refreshedAt;
  if (first) {
    log(`Signed in as ${displayName(view.claims)} (${view.claims.sub}).`);
  } else if (refreshedAt && refreshedAt !== state.refreshedAt) {
    state.refreshes += 1;
    const until = timeOf(view.session.accessTokenExpiresAt);
    log(
      reason === 'forced'
        ? `Refreshed on request: new access token, valid until ${until}.`
        : `token-handler refreshed the access token before forwarding the call (new one valid until ${until}).`,
      'refresh',
    );
  }
  state.view = view;
  state.refreshedAt = refreshedAt;
  render();
  if (first) {
    void loadSessions();
    startLive();
  }
}

async function loadUser(reason) {
  try {
    const view = await th.getUser();
    if (view) applyView(view, reason);
    else showSignedOut();
  } catch (err) {
    log(`Could not read the session: ${describeError(err)}`, 'error');
  }
}

// ---------------------------------------------------------------------------------------
// The user's sessions, and what every tab is told
// ---------------------------------------------------------------------------------------
async function loadSessions() {
  const response = await th.fetch('/auth/sessions', { headers: { accept: 'application/json' } });
  if (!response.ok) {
    $('sessions-card').hidden = true;
    return;
  }
  const list = await response.json();
  const items = list.map((session) => {
    const item = document.createElement('li');
    const label = document.createElement('span');
    label.textContent = `${session.userAgent ?? 'Unknown browser'} · signed in ${dateTimeOf(session.createdAt)} · last seen ${timeOf(session.lastSeenAt)}${session.current ? ' · this browser' : ''}`;
    const end = document.createElement('button');
    end.type = 'button';
    end.className = 'button small';
    end.textContent = session.current ? 'Sign out here' : 'End';
    end.addEventListener('click', () => endSession(session));
    item.append(label, end);
    return item;
  });
  $('sessions').replaceChildren(...items);
  $('sessions-card').hidden = false;
}

async function endSession(session) {
  const response = await th.fetch(`/auth/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' });
  if (response.status === 204) {
    log(session.current ? 'Ended this session.' : `Ended the session of ${session.userAgent ?? 'another browser'}: its tokens are revoked.`);
    if (session.current) showSignedOut();
    else void loadSessions();
  } else {
    log(`Could not end that session: ${response.status}`, 'error');
  }
}

const endedBecause = {
  logout: 'you signed out (in this or another tab)',
  backchannel: 'the provider ended its session',
  timeout: 'it was idle too long or reached its end',
  revoked: 'the provider refused to refresh it',
  'ended-elsewhere': 'it was ended from another session',
};

th.onSessionEvent((event) => {
  if (event.type === 'session-ended') {
    showSignedOut(`Session ended: ${endedBecause[event.reason] ?? event.reason} (told by GET /auth/events).`);
  } else if (event.type === 'session-expiring') {
    log(`The session will end at ${timeOf(event.idleExpiresAt)} unless it is used.`);
  } else if (event.type === 'session-refreshed' && state.view) {
    void loadUser('event');
  }
});

// ---------------------------------------------------------------------------------------
// Live panel: a WebSocket through token-handler that ends with the session
// ---------------------------------------------------------------------------------------
const live = { socket: null };

function setLiveStatus(text, kind) {
  const status = $('live-status');
  status.textContent = text;
  status.dataset.state = kind;
}

function startLive() {
  if (live.socket) return;
  $('live-card').hidden = false;
  setLiveStatus('connecting…', 'connecting');
  live.socket = th.openSocket('/api/live', {
    onOpen: () => setLiveStatus('open', 'open'),
    onMessage: (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'tick') $('live-tick').textContent = `tick ${message.n} for ${message.sub} at ${timeOf(message.serverTime)}`;
    },
    onClose: (event, { reconnecting }) => {
      if (event.code === 4401) return;
      setLiveStatus(reconnecting ? `closed ${event.code}: reconnecting…` : `closed ${event.code}`, reconnecting ? 'connecting' : 'closed');
    },
    // A demo shows it rather than jumping to the sign-in page.
    onSessionEnded: ({ event }) => {
      live.socket = null;
      setLiveStatus(`closed ${event.code} ${event.reason || ''}`.trim(), 'ended');
      log(`The live socket was closed by token-handler: ${event.code} ${event.reason || '(upgrade refused)'}.`, 'error');
    },
  });
}

function stopLive() {
  live.socket?.close();
  live.socket = null;
}

function showSignedOut(message) {
  const wasSignedIn = state.view !== null;
  state.view = null;
  state.refreshedAt = null;
  $('sessions-card').hidden = true;
  setAuto(false);
  if (message && wasSignedIn) log(message, 'error');
  render();
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------
function render() {
  const view = state.view;
  $('signed-in').hidden = !view;
  $('signed-out').hidden = !!view;
  const who = $('who');
  who.dataset.state = view ? 'signed-in' : 'signed-out';
  who.textContent = view ? `Signed in as ${displayName(view.claims)}` : 'Signed out';
  $('document-cookie').textContent = document.cookie === '' ? '"" (empty)' : JSON.stringify(document.cookie);
  $('signed-out-title').textContent = state.justSignedOut ? 'You have signed out' : 'You are signed out';
  $('signed-out-note').hidden = !state.justSignedOut;
  if (!view) return;
  state.justSignedOut = false;

  const { claims, session } = view;
  $('user-name').textContent = displayName(claims);
  $('user-sub').textContent = String(claims.sub);
  $('user-email').textContent = typeof claims.email === 'string' ? claims.email : '–';
  $('session-created').textContent = dateTimeOf(session.createdAt);
  $('session-idle').textContent = dateTimeOf(session.idleExpiresAt);
  $('session-absolute').textContent = dateTimeOf(session.absoluteExpiresAt);
  $('session-scope').textContent = session.scope ?? '–';

  $('token-seconds').dataset.expiresAt = session.accessTokenExpiresAt;
  $('token-expires').textContent = timeOf(session.accessTokenExpiresAt);
  const refreshed = $('refreshed-at');
  refreshed.dataset.iso = session.refreshedAt ?? '';
  refreshed.textContent = session.refreshedAt ? timeOf(session.refreshedAt) : 'never';
  $('refresh-count').textContent = String(state.refreshes);

  tick();
}

/** The countdown of the access token's remaining life, four times a second. */
function tick() {
  const view = state.view;
  if (!view) return;
  const expires = Date.parse(view.session.accessTokenExpiresAt);
  const obtained = Date.parse(view.session.refreshedAt ?? view.session.createdAt);
  const left = expires - Date.now();
  const seconds = $('token-seconds');
  seconds.textContent = left > 0 ? `${Math.ceil(left / 1000)} s left` : 'expired';
  seconds.parentElement.classList.toggle('expired', left <= 0);
  const share = expires > obtained ? Math.max(0, Math.min(1, left / (expires - obtained))) : 0;
  const meter = $('token-meter');
  meter.style.width = `${(share * 100).toFixed(1)}%`;
  meter.classList.toggle('low', share < 0.25);
  $('token-note').textContent =
    left > 0
      ? 'The API accepts it until then. token-handler swaps it shortly before it runs out.'
      : 'It has run out: the next API call makes token-handler refresh it first.';
}

// ---------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------
async function callApi(path = '/api/hello', button = $('call-api')) {
  button.disabled = true;
  const started = performance.now();
  try {
    let response;
    try {
      response = await th.fetch(path, { headers: { accept: 'application/json' } });
    } catch (err) {
      log(`GET ${path} failed: ${describeError(err)}`, 'error');
      return;
    }
    const ms = Math.round(performance.now() - started);
    const text = await response.text();
    showResponse(response, text, ms);
    let code = '';
    try {
      code = JSON.parse(text).error ?? '';
    } catch {
      // not JSON
    }
    log(`GET ${path} → ${response.status}${code ? ` ${code}` : ''} in ${ms} ms`, response.ok ? '' : 'error');
    // The call may have refreshed the tokens: read the session times again.
    if (state.view && response.status !== 401) await loadUser('api');
  } finally {
    button.disabled = false;
  }
}

function showResponse(response, text, ms) {
  $('api-response').hidden = false;
  const status = $('api-status');
  status.textContent = `${response.status} ${response.statusText}`.trim();
  status.dataset.status = String(response.status);
  status.classList.toggle('error', !response.ok);
  $('api-meta').textContent = `${ms} ms · ${clock(new Date())}`;
  const table = $('api-headers');
  table.replaceChildren();
  for (const [name, value] of response.headers) {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = value;
  }
  let body = text;
  try {
    body = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    // shown as it came
  }
  $('api-body').textContent = body;
}

async function refreshNow() {
  const button = $('refresh-now');
  button.disabled = true;
  try {
    const view = await th.refresh();
    if (view) applyView(view, 'forced');
    else showSignedOut('The session has ended: sign in again.');
  } catch (err) {
    log(`Refresh failed: ${describeError(err)}`, 'error');
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  $('sign-out').disabled = true;
  log('Signing out: token-handler revokes the refresh token and ends the session…');
  try {
    await th.logout();
  } catch (err) {
    $('sign-out').disabled = false;
    log(`Sign-out failed: ${describeError(err)}`, 'error');
  }
}

function setAuto(on) {
  $('auto-call').checked = on;
  clearInterval(state.autoTimer);
  state.autoTimer = on ? setInterval(() => callApi(), 5000) : undefined;
}

$('call-api').addEventListener('click', () => callApi());
$('call-admin').addEventListener('click', () => callApi('/api/admin/hello', $('call-admin')));
// A 401 step_up_required here makes the helper navigate to the stronger sign-in, then back to this page.
$('call-secure').addEventListener('click', () => callApi('/api/secure/hello', $('call-secure')));
$('refresh-now').addEventListener('click', refreshNow);
$('sign-out').addEventListener('click', signOut);
$('auto-call').addEventListener('change', (event) => {
  setAuto(event.target.checked);
  if (event.target.checked) callApi();
});
$('sign-in').href = th.loginUrl('/');
if (state.justSignedOut) {
  // A reload should not say it again.
  history.replaceState(null, '', location.pathname);
  log('Signed out: token-handler ended the session and revoked its tokens; the provider ended its own session.');
}
setInterval(tick, 250);
loadUser('load');
