import type { SessionMatch } from '../state/ports.js';
import type { SessionRecord } from '../state/record.js';

/** Whether a signal's match names this session (by its hash, its provider session, or its user before a time). */
export function signalMatches(match: SessionMatch, record: SessionRecord, hash: string): boolean {
  if ('sessionHash' in match) return match.sessionHash === hash;
  if ('sid' in match) return record.claims.sid === match.sid;
  return record.claims.sub === match.sub && record.createdAt <= match.createdBefore;
}
