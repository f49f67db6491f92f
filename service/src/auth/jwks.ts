import { createRemoteJWKSet, errors, type FlattenedJWSInput, type JWSHeaderParameters } from "jose";
import { GatewayError } from "../errors.js";

/**
 * The auth service's key set (AUTH_JWKS_URL), kept so that an outage of the
 * JWKS endpoint is never a user's problem (docs/protocol.md §1):
 *
 * - jose's remote key set fetches, parses and selects keys, but jose alone
 *   drops nothing and keeps nothing on an error: once its cache is older than
 *   `cacheMaxAge` every verification refetches, and a failed fetch fails the
 *   token. So jose is told never to refetch by itself (`cacheMaxAge` and
 *   `cooldownDuration` Infinity) and this module decides when to call its
 *   `reload()`. jose replaces its keys only after a successful fetch, so the
 *   last good set stays in place through any number of failures.
 * - The set is refreshed in the background once it is `refreshAfterMs` old;
 *   tokens keep being checked against the set in hand meanwhile.
 * - Stale-if-error: while fetches fail, the last good set keeps verifying
 *   tokens for `staleIfErrorMs` after its fetch. Past that, or before any set
 *   was ever fetched (an instance that started during the outage), a token
 *   cannot be checked: 503 AUTH_UNAVAILABLE with Retry-After, never a 401,
 *   which would send the client to the auth service for a token that is fine.
 * - A kid the set does not hold triggers one refresh, shared by every request
 *   waiting on it and at most once per `cooldownMs` after a good fetch (once
 *   per `retryMs` while fetches fail), so a flood of made-up kids costs one
 *   fetch, not one per request. If the refresh failed, the kid may be a new
 *   key of the auth service: AUTH_UNAVAILABLE, not TOKEN_INVALID.
 */
export const KEY_SET_POLICY = {
  /** Fetch timeout. */
  timeoutMs: 2000,
  /** A set this old is refreshed in the background (jose's default cacheMaxAge, 10 min). */
  refreshAfterMs: 10 * 60_000,
  /** After a good fetch, the next one an unknown kid may trigger waits this long (jose's default cooldown). */
  cooldownMs: 30_000,
  /** After a failed fetch, the next attempt waits this long: service is back at most this long after the endpoint is. */
  retryMs: 2000,
  /** The last good set keeps verifying this long after its fetch while the endpoint fails. */
  staleIfErrorMs: 6 * 3600_000,
} as const;

export type KeySetPolicy = { readonly [K in keyof typeof KEY_SET_POLICY]: number };

/** "ok": a set fetched within refreshAfterMs or refreshing fine; "stale": fetches fail, the last good set serves; "unavailable": no usable set. */
export type KeySetState = "ok" | "stale" | "unavailable";

export interface KeySetOptions {
  readonly now?: () => number;
  readonly policy?: Partial<KeySetPolicy>;
  /** Told when the state changes, with the reason of the last failure (never a token). */
  readonly onStateChange?: (state: KeySetState, reason: string | undefined) => void;
}

export type KeySet = ReturnType<typeof createKeySet>;

export function createKeySet(url: URL, options: KeySetOptions = {}) {
  const policy: KeySetPolicy = { ...KEY_SET_POLICY, ...options.policy };
  const now = options.now ?? Date.now;
  // Infinity: jose never refetches on its own (see above); reload() is called only from here.
  const remote = createRemoteJWKSet(url, { timeoutDuration: policy.timeoutMs, cooldownDuration: Infinity, cacheMaxAge: Infinity });
  const fetches = new KeySetFetches(() => remote.reload(), policy, now, options.onStateChange);

  function unavailable(): GatewayError {
    const waitMs = Math.max(0, fetches.nextAttemptAt() - now());
    return new GatewayError("AUTH_UNAVAILABLE", { retryAfter: Math.max(1, Math.ceil(waitMs / 1000)) });
  }

  /** A set that can verify now: fetched (or refreshed in the background), or AUTH_UNAVAILABLE. */
  async function ensureUsable(): Promise<void> {
    const t = now();
    if (!fetches.usable(t)) {
      await fetches.refreshIfDue();
      if (!fetches.usable(now())) throw unavailable();
    } else if (t - fetches.fetchedAt! >= policy.refreshAfterMs) {
      void fetches.refreshIfDue();
    }
  }

  /** jose's key resolver (jwtVerify's second argument). */
  async function getKey(header: JWSHeaderParameters, token: FlattenedJWSInput) {
    await ensureUsable();
    try {
      return await remote(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      if (await fetches.refreshIfDue()) return remote(header, token);
      // Unknown to a set we could not refresh: perhaps the auth service's new key.
      if (fetches.failing) throw unavailable();
      throw err;
    }
  }

  return {
    getKey,
    state: (): KeySetState => fetches.state(),
    /** Fetches the set ahead of the first token (at startup); failures are only recorded. */
    warm: async (): Promise<void> => {
      if (fetches.fetchedAt === undefined) await fetches.refreshIfDue();
    },
  };
}

/**
 * The fetch side of the key set: when it was last fetched and attempted, whether
 * fetches fail (and why), the one fetch in flight, and the state last reported.
 * Which key verifies a token is jose's business, not this class's.
 */
class KeySetFetches {
  /** When the last good set arrived; undefined before the first one. */
  fetchedAt: number | undefined;
  /** True from a failed fetch until the next good one. */
  failing = false;
  private attemptedAt: number | undefined;
  private failure: string | undefined;
  private inflight: Promise<boolean> | undefined;
  private reported: KeySetState | undefined;

  constructor(
    private readonly reload: () => Promise<unknown>,
    private readonly policy: KeySetPolicy,
    private readonly now: () => number,
    private readonly onStateChange: KeySetOptions["onStateChange"],
  ) {}

  /** True while the last good set may still verify tokens at time `t` (stale-if-error included). */
  usable(t: number): boolean {
    return this.fetchedAt !== undefined && t - this.fetchedAt <= this.policy.staleIfErrorMs;
  }

  /** The earliest time a new fetch may start: a cooldown after a good one, the retry period after a failure. */
  nextAttemptAt(): number {
    return this.attemptedAt === undefined ? -Infinity : this.attemptedAt + (this.failing ? this.policy.retryMs : this.policy.cooldownMs);
  }

  state(): KeySetState {
    if (!this.usable(this.now())) return "unavailable";
    return this.failing ? "stale" : "ok";
  }

  /**
   * Joins the fetch in flight, or starts one if the cooldown (or, after a
   * failure, the retry period) has passed; resolves true when it brought a fresh set.
   */
  refreshIfDue(): Promise<boolean> {
    if (this.inflight) return this.inflight;
    if (this.now() < this.nextAttemptAt()) return Promise.resolve(false);
    this.attemptedAt = this.now();
    this.inflight = this.reload()
      .then(
        () => {
          this.fetchedAt = this.now();
          this.failing = false;
          this.failure = undefined;
          return true;
        },
        (err: unknown) => {
          this.failing = true;
          this.failure = describeFailure(err);
          return false;
        },
      )
      .finally(() => {
        this.inflight = undefined;
        this.report();
      });
    return this.inflight;
  }

  /** Tells onStateChange of a change; a first state of "ok" is not news. */
  private report(): void {
    const current = this.state();
    if (current !== this.reported && (this.reported !== undefined || current !== "ok")) {
      this.onStateChange?.(current, current === "ok" ? undefined : this.failure);
    }
    this.reported = current;
  }
}

/** Why a fetch failed, for the log: jose's message or the network error's code, never more. */
function describeFailure(err: unknown): string {
  if (err instanceof errors.JWKSTimeout) return "timeout";
  const cause = (err as { cause?: { code?: unknown } }).cause;
  if (typeof cause?.code === "string") return cause.code;
  return err instanceof Error ? err.message.slice(0, 200) : "unknown error";
}
