/**
 * Connect benchmarks, from the client's side: each connect is timed from its
 * first byte to the first WebSocket frame (`connection_established`), then
 * closed with 1000.
 *
 *   bare    upgrade only (the baseline server sends its one frame)
 *   redeem  a pre-issued ticket → upgrade → connection_established
 *   full    POST a ticket (keep-alive connection) → upgrade → connection_established
 *
 * Patterns: closed loop at a fixed concurrency for a fixed time, open loop
 * at a fixed arrival rate (never waits for answers, so a slow server cannot
 * slow the offered load), and sequential (one at a time).
 */
import { HttpConn, HttpPool } from "../lib/http.js";
import { connectFirstFrame } from "../lib/rawws.js";
import { Samples } from "../lib/stats.js";
import { ticketRequest } from "./http-load.js";
import { lagMeter, selfMeter, state, type Command } from "./state.js";

type Mode = "bare" | "redeem" | "full";
type Pattern =
  | { kind: "closed"; concurrency: number; durationMs: number; warmupMs: number }
  | { kind: "open"; rate: number; count: number; warmupCount?: number }
  | { kind: "sequential"; count: number; warmupCount?: number };

export interface ConnectResult {
  /** Connects made in the call, warm-up included (to divide the server's CPU by). */
  readonly total: number;
  readonly attempted: number;
  readonly ok: number;
  readonly rate: number;
  readonly latency: ReturnType<Samples["summary"]>;
  /** full mode: the ticket request's share of each connect. */
  readonly ticketLatency?: ReturnType<Samples["summary"]>;
  readonly failures: Record<string, number>;
  readonly exhausted: boolean;
  readonly wallMs: number;
  readonly loadCpuPercent: number;
  readonly loadLagMs: number;
  /** open loop: how late the worst connect was started, against its schedule. */
  readonly maxScheduleLagMs?: number;
}

const ESTABLISHED = Buffer.from('{"type":"connection_established"');

export const commands: Record<string, Command> = {
  async connectLoad(p: { port: number; mode: Mode; pattern: Pattern; origin?: string }): Promise<ConnectResult> {
    const samples = new Samples();
    const ticketSamples = new Samples();
    const failures: Record<string, number> = {};
    const fail = (why: string) => (failures[why] = (failures[why] ?? 0) + 1);
    let exhausted = false;
    let attempted = 0;
    let total = 0;
    const requests = p.mode === "full" ? state.users.map((u) => ticketRequest(p.port, state.tokens.get(u)!, p.origin)) : [];
    let nextUser = 0;

    /** One connect; returns false when there is nothing left to connect with. */
    const once = async (http: HttpConn | HttpPool | undefined, record: boolean): Promise<boolean> => {
      const t0 = performance.now();
      let path = "/ws";
      if (p.mode === "redeem") {
        const ticket = state.tickets.pop();
        if (ticket === undefined) {
          exhausted = true;
          return false;
        }
        path = `/ws?ticket=${ticket}`;
      } else if (p.mode === "full") {
        const bytes = requests[nextUser++ % requests.length]!;
        try {
          const res = http instanceof HttpPool ? await http.requestRaw(bytes) : await http!.sendRaw(bytes);
          if (res.status !== 201) {
            if (record) fail(`ticket ${res.status}`);
            return true;
          }
          path = `/ws?ticket=${(JSON.parse(res.body) as { ticket: string }).ticket}`;
        } catch (err) {
          if (record) fail(`ticket ${(err as Error).message}`);
          return true;
        }
      }
      const t1 = performance.now();
      const frame = await connectFirstFrame({ port: p.port, path, origin: p.origin });
      total++;
      if (!record) return true;
      attempted++;
      if (frame.status !== 101) fail(frame.status === 0 ? "network" : `upgrade ${frame.status}`);
      else if (frame.opcode !== 1 || frame.payload.compare(ESTABLISHED, 0, ESTABLISHED.length, 0, ESTABLISHED.length) !== 0) {
        const text = frame.payload.toString("utf8");
        fail(frame.opcode === 1 ? (/"code":"([A-Z_]+)"/.exec(text)?.[1] ?? "unexpected frame") : `opcode ${frame.opcode}`);
      } else {
        samples.add(frame.ms + (t1 - t0));
        if (p.mode === "full") ticketSamples.add(t1 - t0);
      }
      return true;
    };

    let meter: ReturnType<typeof selfMeter> | undefined;
    let lag: ReturnType<typeof lagMeter> | undefined;
    let measuredFrom = performance.now();
    let maxScheduleLagMs: number | undefined;
    const pattern = p.pattern;

    if (pattern.kind === "closed") {
      const begin = performance.now();
      measuredFrom = begin + pattern.warmupMs;
      const end = measuredFrom + pattern.durationMs;
      const arm = setTimeout(() => {
        meter = selfMeter();
        lag = lagMeter();
      }, pattern.warmupMs);
      await Promise.all(
        Array.from({ length: pattern.concurrency }, async () => {
          const http = p.mode === "full" ? new HttpConn("127.0.0.1", p.port) : undefined;
          for (;;) {
            const t = performance.now();
            if (t >= end) break;
            if (!(await once(http, t >= measuredFrom))) break;
          }
          http?.close();
        }),
      );
      clearTimeout(arm);
    } else if (pattern.kind === "sequential") {
      const http = p.mode === "full" ? new HttpConn("127.0.0.1", p.port) : undefined;
      for (let i = 0; i < (pattern.warmupCount ?? 0); i++) if (!(await once(http, false))) break;
      measuredFrom = performance.now();
      meter = selfMeter();
      lag = lagMeter();
      for (let i = 0; i < pattern.count; i++) if (!(await once(http, true))) break;
      http?.close();
    } else {
      // Open loop: connect i starts at begin + i / rate, whatever happened to the earlier ones.
      const pool = p.mode === "full" ? new HttpPool("127.0.0.1", p.port, 64) : undefined;
      const warm = pattern.warmupCount ?? 0;
      const total = warm + pattern.count;
      const interval = 1000 / pattern.rate;
      const inflight: Promise<unknown>[] = [];
      const begin = performance.now();
      maxScheduleLagMs = 0;
      let i = 0;
      while (i < total) {
        const now = performance.now();
        while (i < total && begin + i * interval <= now) {
          if (i === warm) {
            measuredFrom = begin + i * interval;
            meter = selfMeter();
            lag = lagMeter();
          }
          if (i >= warm) maxScheduleLagMs = Math.max(maxScheduleLagMs, now - (begin + i * interval));
          inflight.push(once(pool, i >= warm));
          i++;
        }
        const wait = begin + i * interval - performance.now();
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(wait, 50))));
      }
      await Promise.all(inflight);
      pool?.close();
    }
    const cpu = meter?.();
    const worstLag = lag?.() ?? NaN;
    const wallMs = performance.now() - measuredFrom;
    return {
      total,
      attempted,
      ok: samples.count,
      rate: (samples.count / wallMs) * 1000,
      latency: samples.summary(),
      ...(p.mode === "full" ? { ticketLatency: ticketSamples.summary() } : {}),
      failures,
      exhausted,
      wallMs,
      loadCpuPercent: cpu?.percent ?? NaN,
      loadLagMs: worstLag,
      ...(maxScheduleLagMs !== undefined ? { maxScheduleLagMs } : {}),
    };
  },
};
