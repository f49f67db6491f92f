/**
 * Browser-side processes the e2e harness starts itself (a browser, a
 * WebDriver server, Xvfb): each one on a port or display picked free, and
 * stopped by its PID, never by name, so that parallel runs on one machine
 * cannot stop each other's browsers.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";

export interface Tracked {
  readonly pid: number;
  readonly child: ChildProcess;
  /** The last lines it wrote (stdout and stderr), for error messages. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
// A worker that dies without running afterAll must not leave browsers behind.
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Fails with the apt package to install when `bin` is missing, rather than with a spawn ENOENT. */
export function requireBinary(bin: string, aptPackage: string): void {
  if (!existsSync(bin)) throw new Error(`${bin} is not installed: apt-get install ${aptPackage}`);
}

export function spawnTracked(bin: string, args: string[], env: NodeJS.ProcessEnv = process.env): Tracked {
  const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid === undefined) throw new Error(`${bin} did not start`);
  live.add(child);
  let tail = "";
  const keep = (chunk: Buffer) => (tail = (tail + chunk.toString()).slice(-4000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      live.delete(child);
      resolve();
    }),
  );
  child.once("error", () => undefined);
  return {
    pid: child.pid,
    child,
    output: () => tail.trim(),
    async stop(graceMs = 3000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      signal(child.pid!, "SIGTERM");
      const timer = setTimeout(() => signal(child.pid!, "SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Removes a browser profile. A browser's helper processes can still be
 * flushing into it for a moment after the browser itself has exited (CI saw
 * ENOTEMPTY), so Node retries with a short backoff.
 */
export async function removeProfile(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
}

/** Sends `sig` to `pid`; a process that has just exited (ESRCH) is what was wanted. */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Polls `probe` until it resolves to something other than undefined; fails naming `what` and the process's output. */
export async function waitUntil<T>(what: string, proc: Tracked, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(`${what}: the process exited (${proc.child.exitCode ?? proc.child.signalCode}): ${proc.output()}`);
    }
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: no answer within ${timeoutMs} ms: ${proc.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
