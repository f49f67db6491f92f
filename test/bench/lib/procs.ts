/**
 * Child processes for the benchmarks and drills: the real gateway process
 * (`node --import tsx service/src/main.ts`, as test/support/process.ts runs
 * it), the comparison servers, and the load generators, each optionally
 * pinned to a CPU with `taskset`, with its output in a log file rather than a
 * pipe (so the parent spends no CPU draining it and the log can be read after).
 *
 * Every child is killed when this process exits, however it exits.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { cpus as osCpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { sleep } from "./stats.js";
import { freePort } from "../../support/ports.js";
export { freePort };

export const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const RUN_ID = new Date().toISOString().replace(/[:.]/g, "-");
export const LOG_DIR = join(ROOT, ".tmp", "bench-logs", RUN_ID);
const live = new Set<ChildProcess>();

function killAll(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
}
process.once("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(130);
  });
}

/** The CPU split: the server under test on one core, everything else (load, redis-server, this runner) on the other. */
export interface CpuPlan {
  readonly pinned: boolean;
  readonly server: string | undefined;
  readonly load: string | undefined;
  readonly cores: number;
  describe(): string;
}

export function cpuPlan(wantPinning: boolean): CpuPlan {
  const cores = osCpus().length;
  let pinned = wantPinning && cores >= 2;
  if (pinned) {
    try {
      execFileSync("taskset", ["-V"], { stdio: "ignore" });
    } catch {
      pinned = false;
    }
  }
  return {
    pinned,
    cores,
    server: pinned ? "0" : undefined,
    load: pinned ? `1-${cores - 1}` : undefined,
    describe: () =>
      pinned
        ? `servers under test pinned to CPU 0; load generators, redis-server and the runner pinned to CPU${cores > 2 ? `s 1-${cores - 1}` : " 1"} (taskset)`
        : `no CPU pinning (${cores} cores shared by everything)`,
  };
}

/** Pins this process (all its threads) to `cpus`; children inherit it. */
export function pinSelf(cpus: string | undefined): void {
  if (cpus === undefined) return;
  execFileSync("taskset", ["-a", "-cp", cpus, String(process.pid)], { stdio: "ignore" });
}

/**
 * Awaits `promise` while holding the event loop open: startRedis() unrefs its
 * child, so awaiting only its exit would let a finished runner end with 13
 * (unsettled top-level await) before the exit event arrives.
 */
export async function held<T>(promise: Promise<T>): Promise<T> {
  const timer = setInterval(() => undefined, 1000);
  try {
    return await promise;
  } finally {
    clearInterval(timer);
  }
}


export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly at: number;
}

export interface NodeProc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly logPath: string;
  readonly exited: Promise<Exit>;
  readonly exit: Exit | undefined;
  alive(): boolean;
  log(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit. */
  stop(graceMs?: number): Promise<Exit>;
}

export interface SpawnOptions {
  readonly env: Record<string, string>;
  readonly cpus?: string | undefined;
  readonly name: string;
  /** Resolves once the log has a line matching this. */
  readonly ready?: RegExp;
  readonly readyTimeoutMs?: number;
  readonly args?: readonly string[];
  readonly nodeArgs?: readonly string[];
  /** Extra stdio entries (e.g. "ipc"). */
  readonly ipc?: boolean;
  readonly cwd?: string;
  /** Write the output here instead of the run's log directory (e.g. /dev/null). */
  readonly logPath?: string;
}

/** Runs a TypeScript entry point with `node --import tsx` (like spawnGateway), optionally under taskset. */
export async function spawnNode(script: string, options: SpawnOptions): Promise<NodeProc> {
  mkdirSync(LOG_DIR, { recursive: true });
  const logPath = options.logPath ?? join(LOG_DIR, `${options.name}.log`);
  const fd = openSync(logPath, "a");
  const nodeArgv = [...(options.nodeArgs ?? []), "--import", "tsx", script, ...(options.args ?? [])];
  const [command, argv] = options.cpus !== undefined ? ["taskset", ["-c", options.cpus, process.execPath, ...nodeArgv]] : [process.execPath, nodeArgv];
  const child = spawn(command, argv, {
    cwd: options.cwd ?? ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...options.env },
    stdio: options.ipc ? ["ignore", fd, fd, "ipc"] : ["ignore", fd, fd],
  });
  closeSync(fd);
  live.add(child);
  let exit: Exit | undefined;
  const exited = new Promise<Exit>((resolve) =>
    child.once("exit", (code, signal) => {
      live.delete(child);
      exit = { code, signal, at: Date.now() };
      resolve(exit);
    }),
  );
  const read = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  const proc: NodeProc = {
    name: options.name,
    child,
    pid: child.pid ?? -1,
    logPath,
    exited,
    get exit() {
      return exit;
    },
    alive: () => exit === undefined,
    log: read,
    async stop(graceMs = 10_000) {
      if (exit) return exit;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
  if (options.ready) {
    const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000);
    while (!options.ready.test(read())) {
      if (exit) throw new Error(`${options.name} exited (${exit.code ?? exit.signal}) before it was ready:\n${read().slice(-2000)}`);
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`${options.name} was not ready within ${options.readyTimeoutMs ?? 20_000} ms:\n${read().slice(-2000)}`);
      }
      await sleep(20);
    }
  }
  return proc;
}

export interface GatewayProc extends NodeProc {
  readonly port: number;
  readonly url: string;
  readonly wsUrl: string;
}

let gatewayRoot = ROOT;
/**
 * Runs the gateway from another checkout (its service/ and node_modules), to
 * measure a proposed change side by side with the same harness:
 * `npm run bench -- --gateway-root /tmp/patched`.
 */
export function setGatewayRoot(dir: string): void {
  gatewayRoot = dir;
}

/** The real gateway process, listening on a free loopback port; ready once GET /healthz answers 200 (whatever LOG_LEVEL says). */
export async function spawnGatewayProc(options: {
  env: Record<string, string>;
  cpus?: string | undefined;
  name: string;
  nodeArgs?: readonly string[];
  readyTimeoutMs?: number;
  /** Another checkout to run the gateway from (default: this one, or --gateway-root). */
  root?: string;
  logPath?: string;
}): Promise<GatewayProc> {
  const port = await freePort();
  const proc = await spawnNode("service/src/main.ts", {
    name: options.name,
    cpus: options.cpus,
    nodeArgs: options.nodeArgs,
    cwd: options.root ?? gatewayRoot,
    logPath: options.logPath,
    env: { HOST: "127.0.0.1", PORT: String(port), METRICS_PORT: "0", ...options.env },
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000);
  for (;;) {
    if (!proc.alive()) throw new Error(`${options.name} exited (${proc.exit?.code ?? proc.exit?.signal}) before it was ready:\n${proc.log().slice(-2000)}`);
    const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      proc.child.kill("SIGKILL");
      throw new Error(`${options.name} did not answer /healthz within ${options.readyTimeoutMs ?? 20_000} ms:\n${proc.log().slice(-2000)}`);
    }
    await sleep(50);
  }
  return Object.assign(proc, { port, url, wsUrl: `ws://127.0.0.1:${port}` });
}

/** A helper server (bare Fastify, bare ws, Socket.IO) that prints `READY {"port":…}` when it listens. */
export async function spawnHelperServer(
  script: string,
  options: { env?: Record<string, string>; cpus?: string | undefined; name: string; args?: readonly string[]; nodeArgs?: readonly string[] },
): Promise<GatewayProc> {
  const proc = await spawnNode(script, { name: options.name, cpus: options.cpus, env: options.env ?? {}, args: options.args, nodeArgs: options.nodeArgs, ready: /^READY /m });
  const line = /^READY (.*)$/m.exec(proc.log())![1]!;
  const { port } = JSON.parse(line) as { port: number };
  return Object.assign(proc, { port, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}` });
}

// ── /proc sampling ──

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Resident set size in bytes (VmRSS), or NaN when the process is gone. */
export function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** User + system CPU time of the process in ms (10 ms resolution). */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Measures a process's CPU use (as % of one core) over a window. */
export function cpuMeter(pid: number): () => { cpuMs: number; wallMs: number; percent: number } {
  const c0 = cpuMs(pid);
  const t0 = performance.now();
  return () => {
    const used = cpuMs(pid) - c0;
    const wall = performance.now() - t0;
    return { cpuMs: used, wallMs: wall, percent: (used / wall) * 100 };
  };
}

/** The pid of the redis-server answering at `url` (INFO server), to meter its CPU. */
export async function redisPid(url: string): Promise<number> {
  const { Redis } = await import("ioredis");
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const info = await client.info("server");
    return Number(/process_id:(\d+)/.exec(info)?.[1] ?? NaN);
  } finally {
    client.disconnect();
  }
}

// ── the machine's other tenants ──

function machineTicks(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  // idle + iowait
  return { busy: total - (v[3] ?? 0) - (v[4] ?? 0), total };
}

/** CPU ms used by this process and every child it has waited for (utime, stime, cutime, cstime). */
function treeCpuMs(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK;
}

/**
 * Measures how much of the machine was used by processes that are not ours
 * (other people's builds and tests on a shared machine), between start and
 * stop, in % of all cores. Only exact once our children have exited.
 */
export function noiseMeter(): () => { othersPercent: number; machinePercent: number } {
  const m0 = machineTicks();
  const c0 = treeCpuMs();
  const cores = osCpus().length;
  return () => {
    const m1 = machineTicks();
    const wallTicks = (m1.total - m0.total) / cores;
    const busyMs = ((m1.busy - m0.busy) * 1000) / CLK_TCK;
    const wallMs = (wallTicks * 1000) / CLK_TCK;
    const ours = treeCpuMs() - c0;
    return { othersPercent: Math.max(0, ((busyMs - ours) / (wallMs * cores)) * 100), machinePercent: (busyMs / (wallMs * cores)) * 100 };
  };
}

/**
 * Waits (at most `maxWaitMs`) until the whole machine is below `threshold`%
 * busy over a 500 ms sample; call it while our own servers are idle, before
 * a measured round. Returns how busy it was when the round started.
 */
export async function waitForQuiet(maxWaitMs = 5000, threshold = 30): Promise<{ waitedMs: number; busyPercent: number }> {
  const t0 = Date.now();
  for (;;) {
    const a = machineTicks();
    await sleep(500);
    const b = machineTicks();
    const busy = ((b.busy - a.busy) / (b.total - a.total)) * 100;
    if (busy < threshold || Date.now() - t0 >= maxWaitMs) return { waitedMs: Date.now() - t0, busyPercent: busy };
  }
}

/**
 * For a process started with `--inspect=127.0.0.1:0`: runs a full garbage
 * collection through the inspector protocol and returns
 * process.memoryUsage() afterwards. The heap after a full GC is what a leak
 * shows in; RSS alone also moves with V8's heap sizing.
 */
export async function gcAndMemory(proc: NodeProc): Promise<{ rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number }> {
  // The last one: a log file may hold an earlier process's lines.
  const m = [...proc.log().matchAll(/Debugger listening on (ws:\/\/\S+)/g)].at(-1);
  if (!m) throw new Error(`${proc.name} was not started with --inspect`);
  const { default: WebSocket } = await import("ws");
  const ws = new WebSocket(m[1]!);
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  let id = 0;
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const my = ++id;
      const timer = setTimeout(() => reject(new Error(`inspector ${method} timed out`)), 30_000);
      const onMessage = (data: Buffer) => {
        const msg = JSON.parse(data.toString()) as { id?: number; result?: Record<string, unknown>; error?: unknown };
        if (msg.id !== my) return;
        clearTimeout(timer);
        ws.off("message", onMessage);
        if (msg.error) reject(new Error(JSON.stringify(msg.error)));
        else resolve(msg.result ?? {});
      };
      ws.on("message", onMessage);
      ws.send(JSON.stringify({ id: my, method, params }));
    });
  try {
    await call("HeapProfiler.collectGarbage");
    await call("HeapProfiler.collectGarbage");
    const r = await call("Runtime.evaluate", { expression: "JSON.stringify(process.memoryUsage())", returnByValue: true });
    return JSON.parse((r.result as { value: string }).value) as { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number };
  } finally {
    ws.close();
  }
}
