/**
 * When the client tries again (§7): the backoff schedule and its attempt
 * count, the small jitter of "reconnect now", the delay before asking the
 * store again (§8.2), and whether the next attempt needs a fresh token.
 */
import { backoffDelay, reconnectNowDelay } from "./backoff.js";
import type { Failure } from "./failure.js";
import type { Settings } from "./settings.js";

/** Retry delay after the gateway could not serve a resume or a chat message (§8.2). */
const STORE_RETRY_MS = 1000;

export class RetryPolicy {
  readonly #settings: Pick<Settings, "now" | "random" | "backoff">;
  /** Consecutive failed attempts: the exponent of the backoff. */
  #attempt = 0;
  /** The last token was refused or is stale: the next attempt asks the app for a fresh one. */
  freshToken = false;

  constructor(settings: Pick<Settings, "now" | "random" | "backoff">) {
    this.#settings = settings;
  }

  /** connect(): the schedule starts over. */
  restart(): void {
    this.#attempt = 0;
  }

  /** A connection that stayed up long enough (since `upSince`) starts the backoff schedule over. */
  noteUptime(upSince: number | undefined): void {
    if (upSince !== undefined && this.#settings.now() - upSince >= this.#settings.backoff.stableAfterMs) this.#attempt = 0;
  }

  /** How long to wait before the next attempt; counts the attempt when it backs off. */
  delayAfter(failure: Failure): number {
    if (failure.immediate) return 0;
    if (failure.action === "reconnect_now" && failure.wasOpen) return this.jitter();
    if (failure.action === "refresh_token") {
      this.freshToken = true;
      return failure.wasOpen ? this.jitter() : this.#backoff();
    }
    const delay = this.#backoff();
    return failure.retryAfterMs === undefined ? delay : Math.max(delay, failure.retryAfterMs);
  }

  /** The small jitter of "reconnect now": soon, but not every client at the same millisecond. */
  jitter(): number {
    return reconnectNowDelay(this.#settings.random(), this.#settings.backoff);
  }

  storeRetryDelay(): number {
    return STORE_RETRY_MS + this.jitter();
  }

  #backoff(): number {
    return backoffDelay(this.#attempt++, this.#settings.random(), this.#settings.backoff);
  }
}
