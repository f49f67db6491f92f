/** The client's retry policy (service/client/retry.ts): which delay follows which failure, and when the schedule starts over. */
import { describe, expect, it } from "vitest";
import { DEFAULT_BACKOFF } from "../../service/client/backoff.js";
import type { Failure } from "../../service/client/failure.js";
import { RetryPolicy } from "../../service/client/retry.js";

/** random() just below 1: each backoff delay is its attempt's ceiling minus 1 ms. */
function policy(clock = { now: 0 }) {
  return new RetryPolicy({ now: () => clock.now, random: () => 0.999999, backoff: { ...DEFAULT_BACKOFF } });
}

const lost: Failure = { errorCode: "CONNECTION_LOST", action: "reconnect" };

describe("RetryPolicy", () => {
  it("backs off exponentially per consecutive failure, and connect() starts the schedule over", () => {
    const retry = policy();
    expect([1, 2, 3, 4].map(() => retry.delayAfter(lost))).toEqual([499, 999, 1999, 3999]);
    retry.restart();
    expect(retry.delayAfter(lost)).toBe(499);
  });

  it("starts over only after a connection that stayed up stableAfterMs", () => {
    const clock = { now: 100_000 };
    const retry = policy(clock);
    retry.delayAfter(lost);
    retry.delayAfter(lost);
    retry.noteUptime(clock.now - DEFAULT_BACKOFF.stableAfterMs + 1); // up just too briefly
    expect(retry.delayAfter(lost)).toBe(1999);
    retry.noteUptime(undefined); // never established
    expect(retry.delayAfter(lost)).toBe(3999);
    retry.noteUptime(clock.now - DEFAULT_BACKOFF.stableAfterMs);
    expect(retry.delayAfter(lost)).toBe(499);
  });

  it("4012 on an open connection: the small jitter, and the backoff is not counted", () => {
    const retry = policy();
    expect(retry.delayAfter({ errorCode: "SERVICE_RESTART", action: "reconnect_now", wasOpen: true })).toBe(999);
    expect(retry.delayAfter(lost)).toBe(499);
  });

  it("a refused token: the next attempt asks for a fresh one; after an open connection, soon", () => {
    const retry = policy();
    expect(retry.freshToken).toBe(false);
    expect(retry.delayAfter({ errorCode: "TOKEN_EXPIRED", action: "refresh_token", wasOpen: true })).toBe(999);
    expect(retry.freshToken).toBe(true);
    expect(retry.delayAfter({ errorCode: "TOKEN_EXPIRED", action: "refresh_token" })).toBe(499);
  });

  it("Retry-After is a floor, immediate is zero", () => {
    const retry = policy();
    expect(retry.delayAfter({ ...lost, retryAfterMs: 7000 })).toBe(7000);
    expect(retry.delayAfter({ ...lost, retryAfterMs: 10 })).toBe(999);
    expect(retry.delayAfter({ ...lost, immediate: true })).toBe(0);
  });

  it("asks the store again after a second and a jitter", () => {
    expect(policy().storeRetryDelay()).toBe(1999);
  });
});
