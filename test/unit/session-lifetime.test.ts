import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SessionLifetime, SESSION_WARNING_MS, type LifetimeOwner } from "../../service/src/realtime/sessionLifetime.js";
import { TimerWheel } from "../../service/src/realtime/timerWheel.js";
import type { VerifiedToken } from "../../service/src/auth/verifier.js";
import { GatewayError, type ErrorCode } from "../../service/src/errors.js";

/** A connection's lifetime on a fake clock: what it is sent, when it is closed and with what. */
function harness(options: { sessionMs: number; maxAgeSeconds?: number; notBefore?: number; random?: number }) {
  const start = Date.now();
  const sent: Array<Record<string, unknown>> = [];
  const closes: Array<{ code: ErrorCode; at: number }> = [];
  const owner: LifetimeOwner = {
    userId: "u1",
    connectedAt: start,
    send: (frame) => sent.push(typeof frame === "string" ? (JSON.parse(frame) as Record<string, unknown>) : (frame as Record<string, unknown>)) > 0,
    close: (code) => void closes.push({ code, at: Date.now() }),
  };
  const tokens = new Map<string, VerifiedToken>();
  const wheel = new TimerWheel(250);
  const lifetime = new SessionLifetime(
    owner,
    {
      timers: wheel,
      verifier: {
        verify: async (token: string) => {
          const verified = tokens.get(token);
          if (!verified) throw new GatewayError("TOKEN_INVALID");
          return verified;
        },
      },
      store: { tokensNotBefore: async () => options.notBefore ?? 0 },
      config: { maxConnectionAgeSeconds: options.maxAgeSeconds ?? 3600 },
      random: () => options.random ?? 0,
    },
    start + options.sessionMs,
  );
  return { start, sent, closes, tokens, wheel, lifetime };
}

let wheel: TimerWheel | undefined;
beforeEach(() => {
  vi.useFakeTimers({ now: 5_000_000, toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
});
afterEach(() => {
  wheel?.close();
  vi.useRealTimers();
});

describe("SessionLifetime", () => {
  it("warns once, SESSION_WARNING_MS before the end, then closes with SESSION_EXPIRED at the end and not before", () => {
    const h = harness({ sessionMs: 120_000 });
    wheel = h.wheel;
    h.lifetime.onDeadline();
    expect(h.sent).toEqual([]);
    vi.advanceTimersByTime(120_000 - SESSION_WARNING_MS - 1);
    expect(h.sent).toEqual([]);
    vi.advanceTimersByTime(h.wheel.tickMs + 1);
    expect(h.sent).toHaveLength(1);
    expect(h.sent[0]).toMatchObject({ type: "session_expiring", session_expires_at: new Date(h.start + 120_000).toISOString() });
    expect(h.sent[0]!.in_ms).toBeLessThanOrEqual(SESSION_WARNING_MS);
    vi.advanceTimersByTime(SESSION_WARNING_MS - h.wheel.tickMs - 1);
    expect(h.closes).toEqual([]);
    vi.advanceTimersByTime(h.wheel.tickMs + 1);
    expect(h.closes.map((c) => c.code)).toEqual(["SESSION_EXPIRED"]);
    expect(h.closes[0]!.at).toBeGreaterThanOrEqual(h.start + 120_000);
    expect(h.sent).toHaveLength(1);
  });

  it("warns at once when the session is already within the warning", () => {
    const h = harness({ sessionMs: 10_000 });
    wheel = h.wheel;
    h.lifetime.onDeadline();
    expect(h.sent.map((f) => f.type)).toEqual(["session_expiring"]);
  });

  it("closes with CONNECTION_AGE when the age limit comes first", () => {
    const h = harness({ sessionMs: 3_600_000, maxAgeSeconds: 30 });
    wheel = h.wheel;
    h.lifetime.onDeadline();
    vi.advanceTimersByTime(30_000 + h.wheel.tickMs);
    expect(h.closes.map((c) => c.code)).toEqual(["CONNECTION_AGE"]);
    expect(h.sent).toEqual([]);
  });

  it("spreads the age limit over its last tenth, so connections made together do not all end together", () => {
    const ends = [0, 0.5, 0.999].map((random) => {
      const h = harness({ sessionMs: 3_600_000, maxAgeSeconds: 100, random });
      wheel = h.wheel;
      h.lifetime.onDeadline();
      vi.advanceTimersByTime(100_000 + h.wheel.tickMs);
      h.wheel.close();
      expect(h.closes.map((c) => c.code)).toEqual(["CONNECTION_AGE"]);
      return h.closes[0]!.at - h.start;
    });
    // Never after the limit (Cloud Run's request timeout is behind it), never before 90 % of it.
    expect(ends[0]).toBeGreaterThanOrEqual(100_000);
    expect(ends[0]).toBeLessThanOrEqual(100_000 + 250);
    expect(ends[1]).toBeGreaterThanOrEqual(95_000);
    expect(ends[1]).toBeLessThanOrEqual(95_000 + 250);
    expect(ends[2]).toBeGreaterThanOrEqual(90_010);
    expect(ends[2]).toBeLessThanOrEqual(90_010 + 250);
  });

  it("moves the end to a refreshed token's exp: no close at the old end, a new warning before the new one", async () => {
    const h = harness({ sessionMs: 30_000 });
    wheel = h.wheel;
    h.lifetime.onDeadline();
    h.tokens.set("fresh", { sub: "u1", expiresAt: h.start + 300_000, issuedAt: h.start });
    await h.lifetime.refresh("fresh");
    expect(h.sent.map((f) => f.type)).toEqual(["session_expiring", "session_refreshed"]);
    await vi.advanceTimersByTimeAsync(100_000);
    expect(h.closes).toEqual([]);
    await vi.advanceTimersByTimeAsync(300_000 - 100_000 - SESSION_WARNING_MS + h.wheel.tickMs);
    expect(h.sent.map((f) => f.type)).toEqual(["session_expiring", "session_refreshed", "session_expiring"]);
    await vi.advanceTimersByTimeAsync(SESSION_WARNING_MS);
    expect(h.closes.map((c) => c.code)).toEqual(["SESSION_EXPIRED"]);
  });

  it("refuses another user's token, or one issued before a revoke, with a non-fatal TOKEN_INVALID and keeps the end", async () => {
    const h = harness({ sessionMs: 200_000, notBefore: Date.now() + 1 });
    wheel = h.wheel;
    h.lifetime.onDeadline();
    h.tokens.set("other", { sub: "u2", expiresAt: h.start + 900_000 });
    h.tokens.set("old", { sub: "u1", expiresAt: h.start + 900_000, issuedAt: h.start });
    await h.lifetime.refresh("other");
    await h.lifetime.refresh("old");
    await h.lifetime.refresh("not-a-token");
    expect(h.sent).toMatchObject([
      { type: "error", code: "TOKEN_INVALID", fatal: false },
      { type: "error", code: "TOKEN_INVALID", fatal: false },
      { type: "error", code: "TOKEN_INVALID", fatal: false },
    ]);
    expect(h.lifetime.sessionExpiresAt).toBe(h.start + 200_000);
  });

  it("does nothing more once stopped", () => {
    const h = harness({ sessionMs: 1000 });
    wheel = h.wheel;
    h.lifetime.onDeadline();
    h.lifetime.stop();
    vi.advanceTimersByTime(10_000);
    expect(h.closes).toEqual([]);
  });
});
