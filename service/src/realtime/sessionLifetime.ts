import { GatewayError, isGatewayError, type ErrorCode } from "../errors.js";
import { issuedBefore, type TokenVerifier } from "../auth/verifier.js";
import { StoreUnavailableError, type Store } from "../plugins/store/types.js";
import { errorFrame } from "./frames.js";
import type { TimerWheel, WheelEntry } from "./timerWheel.js";

/**
 * How long one connection may live: until its session (the user token's
 * exp, extended by `refresh_session`) or MAX_CONNECTION_AGE_SECONDS ends,
 * whichever is first, with a `session_expiring` warning 60 s before the
 * session ends. One wheel deadline per connection, set to the next of those.
 */
export const SESSION_WARNING_MS = 60_000;

/**
 * Each connection's age limit is drawn from the last tenth before
 * MAX_CONNECTION_AGE_SECONDS: the sockets of a reconnect storm (a rollout)
 * were all made within a second or two, and without the spread they would
 * all end together again one age later, a storm that repeats itself.
 */
export const CONNECTION_AGE_SPREAD = 0.1;

/** What the lifetime needs of its connection. */
export interface LifetimeOwner {
  readonly userId: string;
  readonly connectedAt: number;
  send(frame: string | object): boolean;
  close(code: ErrorCode, message?: string): void;
}

export interface LifetimeDeps {
  readonly timers: TimerWheel;
  readonly verifier: Pick<TokenVerifier, "verify">;
  readonly store: Pick<Store, "tokensNotBefore">;
  readonly config: { readonly maxConnectionAgeSeconds: number };
  /** In [0, 1): where in the spread this connection's age limit falls (tests pin it). */
  readonly random?: () => number;
}

export class SessionLifetime implements WheelEntry {
  wheelSlot = 0;
  private warnedFor = 0;
  private ended = false;
  private readonly ageEnd: number;

  constructor(
    private readonly owner: LifetimeOwner,
    private readonly deps: LifetimeDeps,
    private expiresAt: number,
  ) {
    const maxAgeMs = deps.config.maxConnectionAgeSeconds * 1000;
    this.ageEnd = owner.connectedAt + maxAgeMs * (1 - CONNECTION_AGE_SPREAD * (deps.random ?? Math.random)());
  }

  get sessionExpiresAt(): number {
    return this.expiresAt;
  }

  /** Warns or ends the connection if a deadline has passed, then waits for the next one. */
  onDeadline(): void {
    if (this.ended) return;
    const now = this.deps.timers.now();
    const ageEnd = this.ageEnd;
    const warnAt = this.expiresAt - SESSION_WARNING_MS;
    if (now >= this.expiresAt) return this.owner.close("SESSION_EXPIRED");
    if (now >= ageEnd) return this.owner.close("CONNECTION_AGE");
    if (now >= warnAt && this.warnedFor !== this.expiresAt) {
      this.warnedFor = this.expiresAt;
      this.owner.send({
        type: "session_expiring",
        session_expires_at: new Date(this.expiresAt).toISOString(),
        in_ms: this.expiresAt - now,
      });
    }
    const next = Math.min(ageEnd, this.expiresAt, this.warnedFor === this.expiresAt ? Infinity : warnAt);
    this.deps.timers.schedule(this, next);
  }

  /** The connection is closing: no more warnings or deadlines. */
  stop(): void {
    this.ended = true;
    this.deps.timers.cancel(this);
  }

  /**
   * `refresh_session`: a valid token of the same user, issued after any
   * revoke, moves the session end to its exp. Every refusal is a non-fatal
   * error frame; the session goes on until its current end.
   */
  async refresh(token: string): Promise<void> {
    try {
      const verified = await this.deps.verifier.verify(token);
      if (verified.sub !== this.owner.userId) throw new GatewayError("TOKEN_INVALID");
      // A token from before a revoke's not_before extends nothing (the store down: refuse, the session goes on).
      const notBefore = await this.deps.store.tokensNotBefore(this.owner.userId).catch((err: unknown) => {
        if (err instanceof StoreUnavailableError) return Number.MAX_SAFE_INTEGER;
        throw err;
      });
      if (issuedBefore(verified, notBefore)) throw new GatewayError("TOKEN_REVOKED");
      this.expiresAt = verified.expiresAt;
      this.onDeadline();
      this.owner.send({ type: "session_refreshed", session_expires_at: new Date(this.expiresAt).toISOString() });
    } catch (err) {
      if (!isGatewayError(err)) throw err;
      if (err.code === "AUTH_UNAVAILABLE") {
        // Not the token's fault: the client sends the same token again after the delay.
        this.owner.send(errorFrame("AUTH_UNAVAILABLE", { fatal: false, extra: { retry_after: err.retryAfter ?? 1 } }));
        return;
      }
      // An expired or foreign token is just as unusable here: one code, the session goes on until its end.
      this.owner.send(errorFrame("TOKEN_INVALID", { fatal: false, message: "refresh_session needs a valid, unexpired token of the same user." }));
    }
  }
}
