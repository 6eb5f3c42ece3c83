import type { SessionStoreKind } from '../config/types.js';
import type { SharedState } from '../state/index.js';
import type { Sealer } from '../state/sealer.js';
import { CookiePersistence } from './cookie-persistence.js';
import type { SessionPersistence } from './persistence.js';
import { ServerSidePersistence } from './server-side-persistence.js';

/** How sessions travel for `session.store`: the whole record in the cookie, or a pointer to the state's store. */
export function persistenceFor(store: SessionStoreKind, state: SharedState, sealer: Sealer, maxTtlSeconds: number): SessionPersistence {
  if (store === 'cookie') {
    if (!state.denylist) throw new Error('the cookie store needs a denylist');
    return new CookiePersistence(sealer, maxTtlSeconds, state.denylist);
  }
  if (!state.sessionStore) throw new Error(`session.store "${store}" needs a session store`);
  return new ServerSidePersistence(store, state.sessionStore, sealer, maxTtlSeconds);
}
