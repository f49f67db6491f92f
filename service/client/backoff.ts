/**
 * Reconnect delays. "Full jitter" (AWS Architecture Blog, "Exponential
 * Backoff and Jitter"): the delay is uniform in [0, min(cap, base · 2^n)].
 * Spreading the whole interval, rather than adding a little noise to a fixed
 * schedule, is what keeps thousands of clients that lost the same instance
 * from coming back in waves.
 */
export interface BackoffOptions {
  /** Upper bound of the first retry's delay. Default 500 ms. */
  readonly baseMs?: number;
  /** No delay exceeds this. Default 30 s. */
  readonly maxMs?: number;
  /**
   * Upper bound of the jitter after 4012 (an instance restarting or a
   * connection reaching its age limit): reconnect at once, but not all at the
   * same millisecond. Default 1000 ms.
   */
  readonly reconnectNowMaxMs?: number;
  /**
   * A connection that stayed up at least this long resets the schedule; a
   * connection that is refused or dropped soon after opening does not, so a
   * server that accepts and then closes is not hammered. Default 10 s.
   */
  readonly stableAfterMs?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  baseMs: 500,
  maxMs: 30_000,
  reconnectNowMaxMs: 1000,
  stableAfterMs: 10_000,
};

/** The delay before retry number `attempt` (0 for the first retry), given `random()` in [0, 1). */
export function backoffDelay(attempt: number, random: number, options: Required<BackoffOptions>): number {
  // 2^attempt overflows to Infinity long after the cap applies; min() handles it.
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** attempt);
  return Math.floor(random * ceiling);
}

/** The small jitter before reconnecting after 4012. */
export function reconnectNowDelay(random: number, options: Required<BackoffOptions>): number {
  return Math.floor(random * options.reconnectNowMaxMs);
}

/**
 * `Retry-After` as milliseconds: delta-seconds or an HTTP date (RFC 9110
 * §10.2.3). Undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  // An HTTP date names its weekday and month; without letters, Date.parse would read "-3" as a year.
  if (!/[a-z]/i.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
