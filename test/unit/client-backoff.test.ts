import { describe, expect, it } from "vitest";
import { backoffDelay, DEFAULT_BACKOFF, parseRetryAfter, reconnectNowDelay } from "../../service/client/backoff.js";

const opts = { ...DEFAULT_BACKOFF, baseMs: 500, maxMs: 30_000, reconnectNowMaxMs: 1000 };

describe("backoff schedule", () => {
  it("doubles the ceiling per attempt and caps it", () => {
    // random → 1 (just below) shows the ceiling of each attempt.
    const top = (n: number) => backoffDelay(n, 0.999999, opts) + 1;
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8].map(top)).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it("uses the whole interval [0, ceiling): full jitter, not a little noise", () => {
    expect(backoffDelay(3, 0, opts)).toBe(0);
    expect(backoffDelay(3, 0.5, opts)).toBe(2000);
    expect(backoffDelay(3, 0.25, opts)).toBe(1000);
    const samples = Array.from({ length: 2000 }, () => backoffDelay(4, Math.random(), opts));
    expect(Math.min(...samples)).toBeLessThan(800); // reaches near 0 …
    expect(Math.max(...samples)).toBeGreaterThan(7200); // … and near the ceiling of 8000
    expect(Math.max(...samples)).toBeLessThan(8000);
  });

  it("stays capped for any attempt count (2^n overflowing is harmless)", () => {
    expect(backoffDelay(5000, 0.999999, opts)).toBe(29_999);
  });

  it("reconnects after 4012 within the small jitter only", () => {
    expect(reconnectNowDelay(0, opts)).toBe(0);
    expect(reconnectNowDelay(0.999999, opts)).toBe(999);
  });
});

describe("Retry-After", () => {
  const now = Date.parse("2026-11-23T12:00:00Z");
  it("reads delta-seconds and HTTP dates", () => {
    expect(parseRetryAfter("7", now)).toBe(7000);
    expect(parseRetryAfter("Mon, 23 Nov 2026 12:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Mon, 23 Nov 2026 11:00:00 GMT", now)).toBe(0);
  });
  it("ignores what it cannot read", () => {
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(parseRetryAfter("", now)).toBeUndefined();
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter("-3", now)).toBeUndefined();
  });
});
