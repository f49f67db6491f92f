import { describe, expect, it } from "vitest";
import { sleep, until, waitFor } from "../support/wait.js";

describe("test/support/wait", () => {
  it("until returns the first value that is neither undefined nor false, polling async checks", async () => {
    let calls = 0;
    const value = await until("third call", async () => (++calls >= 3 ? { calls } : undefined), 1000, 1);
    expect(value).toEqual({ calls: 3 });
  });

  it("until returns 0 and empty strings (only undefined and false mean 'not yet')", async () => {
    expect(await until("zero", () => 0, 100)).toBe(0);
    expect(await until("empty", () => "", 100)).toBe("");
  });

  it("until fails naming what it waited for", async () => {
    await expect(until("the moon", () => false, 30, 5)).rejects.toThrow(/timed out waiting for the moon/);
  });

  it("waitFor resolves once the condition holds and fails when it never does", async () => {
    let ready = false;
    setTimeout(() => (ready = true), 20);
    await waitFor(() => ready, 2000);
    expect(ready).toBe(true);
    await expect(waitFor(async () => false, 30, "never")).rejects.toThrow(/never/);
  });

  it("sleep lets at least the given time pass", async () => {
    const started = performance.now();
    await sleep(20);
    expect(performance.now() - started).toBeGreaterThanOrEqual(15);
  });
});
