import type { FastifyReply, FastifyRequest } from 'fastify';
import type { LoginTransaction } from '../oidc/provider.js';
import { isCookieNameToken, type SessionCookies } from './cookies.js';
import type { Sealer } from '../state/sealer.js';

export interface PendingLogin extends LoginTransaction {
  returnTo: string;
  /** Epoch milliseconds. */
  createdAt: number;
}

export interface PendingLoginsOptions {
  cookies: SessionCookies;
  sealer: Sealer;
  timeoutSeconds: number;
  maxPerBrowser: number;
  now: () => number;
}

/**
 * Logins in progress, one sealed short-lived cookie each, named after the login's
 * `state`: two tabs logging in at once both complete. At most `maxPerBrowser` are kept
 * (the oldest dropped), so abandoned attempts cannot pile up cookies until the
 * browser's requests grow too large.
 */
export class PendingLogins {
  constructor(private readonly options: PendingLoginsOptions) {}

  async begin(request: FastifyRequest, reply: FastifyReply, transaction: LoginTransaction, returnTo: string): Promise<void> {
    const { cookies, sealer, timeoutSeconds, now } = this.options;
    await this.makeRoom(request, reply);
    const pending: PendingLogin = { ...transaction, returnTo, createdAt: now() };
    cookies.writePendingLogin(reply, transaction.state, await sealer.seal(pending, timeoutSeconds), timeoutSeconds);
  }

  /**
   * The login started with this `state`, consumed: its cookie is cleared, so a replayed
   * callback finds nothing. Null when unknown, tampered or too old.
   */
  async take(request: FastifyRequest, reply: FastifyReply, state: string): Promise<PendingLogin | null> {
    const { cookies } = this.options;
    // A state we issued is a plain token; anything else names no cookie of ours.
    if (!isCookieNameToken(state)) return null;
    const name = cookies.pendingLoginName(state);
    const sealed = cookies.received(request)[name];
    if (sealed === undefined) return null;
    cookies.clearPendingLogin(reply, name);
    const pending = await this.open(sealed);
    return pending && pending.state === state ? pending : null;
  }

  private async open(sealed: string): Promise<PendingLogin | null> {
    const pending = await this.options.sealer.unseal<PendingLogin>(sealed);
    if (!pending || typeof pending.state !== 'string' || typeof pending.createdAt !== 'number') return null;
    return this.options.now() - pending.createdAt <= this.options.timeoutSeconds * 1000 ? pending : null;
  }

  /** Drops unusable pending logins, then the oldest ones until a new one fits. */
  private async makeRoom(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const { cookies, maxPerBrowser } = this.options;
    const alive: Array<{ name: string; createdAt: number }> = [];
    for (const name of cookies.pendingLoginNames(request)) {
      const pending = await this.open(cookies.received(request)[name] ?? '');
      if (pending) alive.push({ name, createdAt: pending.createdAt });
      else cookies.clearPendingLogin(reply, name);
    }
    alive.sort((a, b) => a.createdAt - b.createdAt);
    for (const { name } of alive.slice(0, Math.max(0, alive.length - maxPerBrowser + 1))) {
      cookies.clearPendingLogin(reply, name);
    }
  }
}
