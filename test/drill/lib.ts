/**
 * Shared pieces of the fault drills: the pass/fail line, the time limit, and
 * a client that follows the SDK's rules for the event stream (baseline from
 * connection_established, `resume` on a hole or after a reconnect, new
 * baseline on resync_required) while recording everything a drill judges.
 */
import WebSocket from "ws";
import { mintToken, ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "../support/gateway.js";
import { fmt } from "../bench/lib/stats.js";

export { fmt, mintToken, ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET };

export const quick = process.argv.includes("--quick") || process.env.DRILL_QUICK === "1";

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  readonly detail?: string;
}

/**
 * Runs a drill: prints `PASS <name>: figures` or `FAIL <name>: figures; failed: …`
 * and exits 0 or 1. A drill that throws, or passes its time limit, fails.
 */
export function drill(name: string, limitMs: number, body: () => Promise<{ figures: string; checks: Check[] }>): void {
  const timer = setTimeout(() => {
    process.stdout.write(`FAIL ${name}: did not finish within ${Math.round(limitMs / 1000)} s\n`);
    process.exit(1);
  }, limitMs);
  timer.unref();
  // Hold the event loop open until the verdict: an await on something that
  // holds no handle (an unref'd child's exit) must not end the drill as "0".
  const hold = setInterval(() => undefined, 1000);
  let verdict = false;
  process.once("exit", (code) => {
    if (!verdict) {
      process.stdout.write(`FAIL ${name}: ended without a verdict (exit ${code})\n`);
      process.exitCode = 1;
    }
  });
  const started = Date.now();
  body().finally(() => {
    verdict = true;
    clearInterval(hold);
  }).then(
    ({ figures, checks }) => {
      const failed = checks.filter((c) => !c.ok);
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      if (failed.length === 0) process.stdout.write(`PASS ${name} (${secs} s): ${figures}\n`);
      else process.stdout.write(`FAIL ${name} (${secs} s): ${figures}\n  failed: ${failed.map((c) => `${c.name}${c.detail ? ` (${c.detail})` : ""}`).join("; ")}\n`);
      process.exit(failed.length === 0 ? 0 : 1);
    },
    (err: unknown) => {
      process.stdout.write(`FAIL ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}

export const check = (name: string, ok: boolean, detail?: string): Check => ({ name, ok, ...(detail === undefined ? {} : { detail }) });

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function ticket(url: string, user: string, token?: string): Promise<{ status: number; ticket?: string; code?: string; retryAfter: string | null; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/api/v1/auth/websocket_ticket`, {
    method: "POST",
    headers: { authorization: `Bearer ${token ?? (await mintToken({ sub: user }))}`, origin: ORIGIN },
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json().catch(() => ({}))) as { ticket?: string; error?: { code?: string } };
  return { status: res.status, ticket: body.ticket, code: body.error?.code, retryAfter: res.headers.get("retry-after"), ms: performance.now() - t0 };
}

export async function publish(url: string, user: string, data: Record<string, unknown> = {}, secret = TEST_SERVICE_SECRET): Promise<{ status: number; seq?: number; code?: string; retryAfter: string | null; ms: number }> {
  const t0 = performance.now();
  try {
    const res = await fetch(`${url}/internal/v1/users/${encodeURIComponent(user)}/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${secret}`, "x-service-id": "drill", "content-type": "application/json" },
      body: JSON.stringify({ type: "agent_thinking", run_id: "run-drill", thread_id: "thread-drill", data }),
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await res.json().catch(() => ({}))) as { seq?: number; error?: { code?: string } };
    return { status: res.status, seq: body.seq, code: body.error?.code, retryAfter: res.headers.get("retry-after"), ms: performance.now() - t0 };
  } catch (err) {
    return { status: 0, code: (err as Error).message, retryAfter: null, ms: performance.now() - t0 };
  }
}

/**
 * One user's stream as a client sees it, across reconnects. `last` only moves
 * forward over contiguous seqs; events beyond a hole wait in `pending` (as the
 * SDK buffers them) until the hole is filled; a hole makes the client send
 * `resume`. `resync_required` resets the baseline (and is counted).
 */
export class StreamClient {
  ws: WebSocket | undefined;
  epoch = "";
  last = 0;
  readonly pending = new Set<number>();
  dups = 0;
  holesSeen = 0;
  resyncs = 0;
  resumes = 0;
  resumeCompletes = 0;
  established = 0;
  readonly closes: Array<{ code: number; reason: string; at: number }> = [];
  readonly errors: string[] = [];
  private waiters: Array<() => void> = [];

  /** `token`: the user's token for each new ticket (default: one minted with the test key). */
  constructor(
    readonly user: string,
    private readonly token?: () => Promise<string>,
  ) {}

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** Ticket from `url`, then upgrade; resolves after connection_established (and sends resume when this is a reconnect). */
  async connect(url: string): Promise<void> {
    const t = await ticket(url, this.user, this.token ? await this.token() : undefined);
    if (t.status !== 201 || !t.ticket) throw new Error(`ticket ${t.status} ${t.code ?? ""}`);
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/ws?ticket=${t.ticket}`, { origin: ORIGIN, perMessageDeflate: false });
    this.ws = ws;
    const reconnect = this.epoch !== "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no connection_established within 15 s")), 15_000);
      ws.on("error", () => undefined);
      ws.on("message", (data) => {
        const f = JSON.parse(data.toString()) as Record<string, unknown>;
        this.onFrame(f, ws);
        if (f.type === "connection_established") {
          clearTimeout(timer);
          if (reconnect) this.resume(ws);
          resolve();
        } else if (f.type === "error" && f.fatal === true && this.established === 0) {
          clearTimeout(timer);
          reject(new Error(`refused: ${String(f.code)}`));
        }
      });
      ws.on("close", (code, reason) => {
        clearTimeout(timer);
        if (this.ws === ws) this.closes.push({ code, reason: reason.toString(), at: performance.now() });
        this.wake();
        reject(new Error(`closed ${code}`));
      });
    }).catch((err: Error) => {
      if (!this.open) throw err;
    });
  }

  private resume(ws: WebSocket): void {
    this.resumes++;
    ws.send(JSON.stringify({ type: "resume", last_seq: this.last, epoch: this.epoch }));
  }

  private onFrame(f: Record<string, unknown>, ws: WebSocket): void {
    switch (f.type) {
      case "connection_established":
        this.established++;
        if (this.epoch === "") {
          this.epoch = f.epoch as string;
          this.last = f.latest_seq as number;
        }
        break;
      case "resume_complete":
        this.resumeCompletes++;
        break;
      case "resync_required":
        this.resyncs++;
        this.epoch = f.epoch as string;
        this.last = f.latest_seq as number;
        this.pending.clear();
        break;
      case "error":
        this.errors.push(String(f.code));
        break;
      default:
        if (typeof f.seq === "number") this.accept(f.seq, ws);
    }
    this.wake();
  }

  private accept(seq: number, ws: WebSocket): void {
    if (seq <= this.last || this.pending.has(seq)) {
      this.dups++;
      return;
    }
    if (seq === this.last + 1) {
      this.last = seq;
      while (this.pending.delete(this.last + 1)) this.last++;
      return;
    }
    // A hole: keep the event, ask for what is missing (once per hole).
    if (this.pending.size === 0) {
      this.holesSeen++;
      this.resume(ws);
    }
    this.pending.add(seq);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when `predicate` holds, or false after `timeoutMs`. */
  async until(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  close(): void {
    this.ws?.close(1000);
  }
}

/** Counts of values, for figures: {"4012": 2000}. */
export function tally<T>(values: Iterable<T>, key: (v: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) {
    const k = key(v);
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

export { TEST_JWT_KEY as JWT_KEY };
