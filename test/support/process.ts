import { spawn, type ChildProcess } from "node:child_process";
import { freePort } from "./ports.js";
export { freePort };

/** A free loopback port (the OS picks; a rare collision shows up as EADDRINUSE at listen). */

export interface GatewayProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly wsUrl: string;
  readonly stdout: string[];
  readonly stderr: string[];
  /** Resolves with the exit code and how long after `since` the process ended. */
  exited(since?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>;
}

/** Runs the real gateway process (`npm start`'s entry, through tsx) and waits until it listens. */
export async function spawnGateway(env: Record<string, string>, timeoutMs = 15_000): Promise<GatewayProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", "service/src/main.ts"], {
    env: { PATH: process.env.PATH ?? "", HOST: "127.0.0.1", PORT: String(port), METRICS_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", (code, signal) => {
      exitInfo = { code, signal, at: Date.now() };
      resolve();
    }),
  );
  child.stdout!.on("data", (d: Buffer) => stdout.push(...d.toString().split("\n").filter(Boolean)));
  child.stderr!.on("data", (d: Buffer) => stderr.push(d.toString()));
  const deadline = Date.now() + timeoutMs;
  while (!stdout.some((l) => l.includes('"event":"listening"'))) {
    if (exitInfo) throw new Error(`gateway exited with ${exitInfo.code}: ${stderr.join("")}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`gateway did not start: ${stderr.join("")}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const url = `http://127.0.0.1:${port}`;
  return {
    child,
    url,
    wsUrl: `ws://127.0.0.1:${port}`,
    stdout,
    stderr,
    async exited(since = Date.now()) {
      await exit;
      return { code: exitInfo!.code, signal: exitInfo!.signal, afterMs: exitInfo!.at - since };
    },
  };
}

/** Runs a TypeScript file in a child process (through tsx); resolves with its exit code (null if killed at `timeoutMs`) and its output. */
export async function runScript(script: string, args: string[] = [], timeoutMs = 15_000): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], { cwd: process.cwd(), stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((done) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      done(null);
    }, timeoutMs);
    child.once("exit", (exitCode) => {
      clearTimeout(timer);
      done(exitCode);
    });
  });
  return { code, output: output.trim() };
}
