import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TimerWheel, type WheelEntry } from "../../service/src/realtime/timerWheel.js";

/** An entry that records the (fake) time of each callback. */
function recorder(wheel: TimerWheel, onFire?: (entry: WheelEntry & { fired: number[] }) => void) {
  const entry = {
    wheelSlot: 0,
    fired: [] as number[],
    onDeadline() {
      entry.fired.push(wheel.now());
      onFire?.(entry);
    },
  };
  return entry;
}

let wheel: TimerWheel;
beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
  wheel = new TimerWheel(250);
});
afterEach(() => {
  wheel.close();
  vi.useRealTimers();
});

describe("TimerWheel", () => {
  it("fires a deadline never before its time and at most one tick after it", () => {
    const start = Date.now();
    const deadlines = [1, 100, 249, 250, 251, 999, 1000, 60_000].map((d) => start + d);
    const entries = deadlines.map(() => recorder(wheel));
    entries.forEach((e, i) => wheel.schedule(e, deadlines[i]!));
    vi.advanceTimersByTime(61_000);
    entries.forEach((e, i) => {
      expect(e.fired).toHaveLength(1);
      expect(e.fired[0]).toBeGreaterThanOrEqual(deadlines[i]!);
      expect(e.fired[0]! - deadlines[i]!).toBeLessThanOrEqual(250);
    });
  });

  it("fires a deadline that has already passed on the next tick", () => {
    const late = recorder(wheel);
    wheel.schedule(late, Date.now() - 5000);
    vi.advanceTimersByTime(249);
    expect(late.fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(late.fired).toHaveLength(1);
  });

  it("does not fire a cancelled entry, and a reschedule replaces the earlier deadline", () => {
    const cancelled = recorder(wheel);
    const moved = recorder(wheel);
    wheel.schedule(cancelled, Date.now() + 500);
    wheel.schedule(moved, Date.now() + 500);
    expect(wheel.size).toBe(2);
    wheel.cancel(cancelled);
    wheel.cancel(cancelled);
    wheel.schedule(moved, Date.now() + 5000);
    expect(wheel.size).toBe(1);
    vi.advanceTimersByTime(4000);
    expect(cancelled.fired).toEqual([]);
    expect(moved.fired).toEqual([]);
    vi.advanceTimersByTime(2000);
    expect(moved.fired).toHaveLength(1);
    expect(cancelled.wheelSlot).toBe(0);
    expect(wheel.size).toBe(0);
  });

  it("keeps deadlines further away than one turn of the ring for their own round", () => {
    const far = recorder(wheel);
    const near = recorder(wheel);
    const start = Date.now();
    // 1,024 slots of 250 ms: these two share a bucket, one turn apart.
    wheel.schedule(near, start + 10_000);
    wheel.schedule(far, start + 10_000 + 1024 * 250);
    vi.advanceTimersByTime(20_000);
    expect(near.fired).toHaveLength(1);
    expect(far.fired).toEqual([]);
    vi.advanceTimersByTime(1024 * 250);
    expect(far.fired).toHaveLength(1);
    expect(far.fired[0]).toBeGreaterThanOrEqual(start + 10_000 + 1024 * 250);
  });

  it("fires everything due after a stall longer than the ring, each once", () => {
    const entries = [1_000, 100_000, 300_000].map((d) => {
      const e = recorder(wheel);
      wheel.schedule(e, Date.now() + d);
      return e;
    });
    // The process was stopped: no tick ran for 400 s, then the clock is far ahead.
    vi.setSystemTime(Date.now() + 400_000);
    vi.advanceTimersByTime(250);
    expect(entries.map((e) => e.fired.length)).toEqual([1, 1, 1]);
  });

  it("lets a callback re-arm itself for a later deadline", () => {
    const repeating = recorder(wheel, (e) => {
      if (e.fired.length < 3) wheel.schedule(e, wheel.now() + 1000);
    });
    wheel.schedule(repeating, Date.now() + 1000);
    vi.advanceTimersByTime(10_000);
    expect(repeating.fired).toHaveLength(3);
    expect(repeating.fired[1]! - repeating.fired[0]!).toBeGreaterThanOrEqual(1000);
  });

  it("runs every(period) on its grid, without drifting by a tick each period", () => {
    const at: number[] = [];
    const start = Date.now();
    wheel.every(1000, () => at.push(Date.now()));
    vi.advanceTimersByTime(10_100);
    expect(at).toHaveLength(10);
    expect(at[9]! - start).toBeLessThanOrEqual(10_000 + 250);
  });

  it("runs a period as short as the tick every tick", () => {
    const fine = new TimerWheel(100);
    try {
      let runs = 0;
      fine.every(100, () => runs++);
      vi.advanceTimersByTime(500);
      expect(runs).toBeGreaterThanOrEqual(4);
    } finally {
      fine.close();
    }
  });

  it("stops a repeating task", () => {
    let runs = 0;
    const task = wheel.every(500, () => runs++);
    vi.advanceTimersByTime(1100);
    task.stop();
    const before = runs;
    vi.advanceTimersByTime(5000);
    expect(before).toBeGreaterThan(0);
    expect(runs).toBe(before);
  });

  it("still fires the other entries of a tick when one callback throws, then reports the error", () => {
    const thrower = { wheelSlot: 0, onDeadline: () => { throw new Error("bug in a callback"); } };
    const after = recorder(wheel);
    wheel.schedule(thrower, Date.now() + 100);
    wheel.schedule(after, Date.now() + 100);
    expect(() => vi.advanceTimersByTime(250)).toThrow("bug in a callback");
    expect(after.fired).toHaveLength(1);
  });

  it("fires nothing once closed, and leaves no timer behind", () => {
    const e = recorder(wheel);
    wheel.schedule(e, Date.now() + 100);
    wheel.close();
    vi.advanceTimersByTime(1000);
    expect(e.fired).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });
});
