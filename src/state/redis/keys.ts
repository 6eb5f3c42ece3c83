/**
 * Every Redis key token-handler writes, in one place. On one server or behind Sentinel
 * the names are those of earlier versions, byte for byte (an upgrade finds every session
 * and shares refresh locks with replicas not yet upgraded). On a Cluster the variable part
 * of each key is its hash tag (`th:session:{<id>}`), so the two keys one refresh touches
 * together — its lock and its result, both named by the refresh token's hash — share a
 * slot, and every script and transaction stays in one slot. Keys of different sessions,
 * users and tokens spread over the cluster.
 */
export class KeyLayout {
  constructor(
    private readonly prefix: string,
    /** Whether keys are spread over a Redis Cluster's slots. */
    readonly clustered: boolean,
  ) {}

  /** The hash tag on a Cluster; the bare value elsewhere. */
  private tag(value: string): string {
    return this.clustered ? `{${value}}` : value;
  }

  /** A session's record (a hash: version `v`, sealed record `d`, back-channel logout identity `i`, last slide `s`). */
  session(id: string): string {
    return `${this.prefix}session:${this.tag(id)}`;
  }

  /** The sessions of one provider session (`sid`) or one user (`sub`): back-channel logout's index. */
  index(kind: 'sid' | 'sub', value: string): string {
    return `${this.prefix}${kind}:${this.tag(value)}`;
  }

  /** A denylist entry (`store: cookie`). */
  deny(kind: 'id' | 'sid' | 'sub', value: string): string {
    return `${this.prefix}deny:${kind}:${this.tag(value)}`;
  }

  /** An identifier refused a second time (a logout token's `jti`). */
  seen(value: string): string {
    return `${this.prefix}seen:${this.tag(value)}`;
  }

  /** The lock of one refresh token's refresh: the same slot as its result. */
  refreshLock(tokenHash: string): string {
    return `${this.prefix}refresh:lock:${this.tag(tokenHash)}`;
  }

  /** The sealed outcome of one refresh token's refresh. */
  refreshResult(tokenHash: string): string {
    return `${this.prefix}refresh:result:${this.tag(tokenHash)}`;
  }

  /** The pub/sub channel of session signals (a channel is no key: cluster-wide, no slot). */
  get signalsChannel(): string {
    return `${this.prefix}session-signals`;
  }

  /** Where @fastify/rate-limit counts (one key per client address and route, each alone in its script). */
  get rateLimitNamespace(): string {
    return `${this.prefix}ratelimit:`;
  }
}
