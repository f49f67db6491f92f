/**
 * Waiting in tests: one home for the polling helpers that used to be copied into each test file.
 * Prefer `until`/`waitFor` (wait on observable state) over `sleep`; a fixed sleep is only for
 * pacing (e.g. letting real time pass for a rate limit), never as synchronisation.
 */

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls until `check` returns a value other than undefined/false (and returns it), or fails naming
 * `what` after `timeoutMs`. `check` may be async.
 */
export async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 5000,
  intervalMs = 10,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${timeoutMs} ms)`);
    await sleep(intervalMs);
  }
}

/** Polls until `condition` holds, or fails after `timeoutMs`. */
export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 5000, what = "condition"): Promise<void> {
  await until(what, async () => (await condition()) || undefined, timeoutMs);
}
