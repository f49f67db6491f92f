import type { Store, StreamHead } from "../plugins/store/types.js";
import type { Connection } from "./connection.js";

/**
 * The users this instance holds sockets of: one bus subscription per user
 * (not per socket), and what the bus said on it, so that a connection
 * admitted without this instance hearing its user's channel is told what it
 * missed.
 *
 * A subscription outlives its user's last socket by LINGER_MS (a reconnect
 * finds it in place), then one sweep releases it.
 *
 * Whether a new connection can have missed anything (hub.ts confirm runs the
 * check when it can): the admission step read the head H and the revocation
 * atomically with taking the ticket. If the user's subscription was in place
 * (acknowledged by its node) before the admission step was sent, every event
 * or revoke published after that step reaches this instance on the
 * subscription: either after the connection was registered (delivered to it),
 * or before, and then it is in `lastSeq` / `revokedUpTo`. So the connection
 * catches up when lastSeq > H, and ends when a revoke at or after its ticket's
 * issue was heard, with no store call. Otherwise (a new subscription, or one
 * acknowledged later) it asks the store (userState) once the subscription is
 * in place.
 */
export type UserChannels = ReturnType<typeof createUserChannels>;

const LINGER_MS = 30_000;
const SWEEP_MS = 5_000;

interface UserChannel {
  readonly conns: Set<Connection>;
  readonly subscribed: Promise<void>;
  /** The `generation` at which the subscription was acknowledged; undefined until then (or if it failed). */
  readyAt: number | undefined;
  /** The epoch and highest seq heard on the channel since it was subscribed. */
  epoch: string | undefined;
  lastSeq: number;
  /** The latest revocation time heard on the channel (a revoke that did not say when, from an older instance: when it was heard). */
  revokedUpTo: number;
  /** When the last socket left (undefined while there are sockets). */
  idleSince: number | undefined;
}

export type MissedCheck = { readonly known: true; readonly revoked: boolean; readonly behind: boolean } | { readonly known: false };

export function createUserChannels(deps: { store: Store; now?: () => number }) {
  return new UserChannelRegistry(deps.store, deps.now ?? Date.now);
}

class UserChannelRegistry {
  private readonly users = new Map<string, UserChannel>();
  /** Counts acknowledged subscriptions; admission notes it before its store step. */
  private acknowledged = 0;
  private readonly sweep: NodeJS.Timeout;

  constructor(
    private readonly store: Store,
    private readonly now: () => number,
  ) {
    this.sweep = setInterval(() => this.releaseLingering(), SWEEP_MS);
    this.sweep.unref();
  }

  /** Note this before the admission step is sent: `missed` compares against it. */
  get generation(): number {
    return this.acknowledged;
  }

  /** The user's sockets here (empty for a lingering subscription, or none). */
  connsOf(userId: string): ReadonlySet<Connection> | undefined {
    return this.users.get(userId)?.conns;
  }

  /** Adds the socket, subscribing the user's channel if this instance does not hear it yet; resolves once it does. */
  join(conn: Connection): Promise<void> {
    let user = this.users.get(conn.userId);
    if (user === undefined) {
      const subscribed = this.store.subscribeUser(conn.userId);
      const entry: UserChannel = { conns: new Set(), subscribed, readyAt: undefined, epoch: undefined, lastSeq: 0, revokedUpTo: 0, idleSince: undefined };
      subscribed.then(
        () => (entry.readyAt = ++this.acknowledged),
        () => undefined, // the caller's await sees it
      );
      this.users.set(conn.userId, (user = entry));
    }
    user.conns.add(conn);
    user.idleSince = undefined;
    return user.subscribed;
  }

  leave(conn: Connection): void {
    const user = this.users.get(conn.userId);
    if (user === undefined || !user.conns.delete(conn) || user.conns.size > 0) return;
    // A failed subscription is not kept: the next socket of the user tries again.
    if (user.readyAt === undefined) {
      this.users.delete(conn.userId);
      this.store.unsubscribeUser(conn.userId).catch(() => undefined);
    } else user.idleSince = this.now();
  }

  /** What the bus said, noted for connections admitted while it was on its way. */
  heardEvent(userId: string, epoch: string, seq: number): void {
    const user = this.users.get(userId);
    if (user === undefined) return;
    if (user.epoch !== epoch) {
      user.epoch = epoch;
      user.lastSeq = seq;
    } else user.lastSeq = Math.max(user.lastSeq, seq);
  }

  heardRevoke(userId: string, at: number | undefined): void {
    const user = this.users.get(userId);
    if (user !== undefined) user.revokedUpTo = Math.max(user.revokedUpTo, at ?? this.now());
  }

  /**
   * What a connection admitted at `admittedAfter` (the generation noted
   * before its admission step) with head `head`, of a ticket issued at
   * `issuedAt`, missed: known from what the bus said when the subscription
   * was acknowledged before that step, else unknown (ask the store).
   */
  missed(userId: string, admittedAfter: number, head: StreamHead, issuedAt: number): MissedCheck {
    const user = this.users.get(userId);
    if (user?.readyAt === undefined || user.readyAt > admittedAfter) return { known: false };
    const behind = user.epoch !== undefined && (user.epoch !== head.epoch || user.lastSeq > head.latestSeq);
    return { known: true, revoked: user.revokedUpTo >= issuedAt, behind };
  }

  /**
   * The bus is back after a drop, every channel subscribed again: what was
   * published meanwhile was not heard, so a connection admitted before this
   * point asks the store (its subscription counts as acknowledged now).
   */
  resubscribed(): void {
    for (const user of this.users.values()) if (user.readyAt !== undefined) user.readyAt = ++this.acknowledged;
  }

  /** Every subscription is dropped by the store's close; this stops the sweep. */
  close(): void {
    clearInterval(this.sweep);
  }

  /** Releases the subscriptions whose last socket left more than LINGER_MS ago. */
  private releaseLingering(): void {
    const cutoff = this.now() - LINGER_MS;
    for (const [userId, user] of this.users) {
      if (user.idleSince === undefined || user.idleSince > cutoff) continue;
      this.users.delete(userId);
      this.store.unsubscribeUser(userId).catch(() => undefined);
    }
  }
}
