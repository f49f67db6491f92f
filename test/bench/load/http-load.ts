/**
 * Closed-loop HTTP load: `concurrency` keep-alive connections, each sending
 * its next request as soon as the previous answer arrived, for a fixed time.
 * Requests are rendered once up front (one per user token), so the loop
 * itself only writes bytes and parses a status line.
 */
import { HttpConn, HttpPool, renderRequest } from "../lib/http.js";
import { Samples } from "../lib/stats.js";
import { lagMeter, mintUsers, selfMeter, state, type Command } from "./state.js";

export interface HttpLoadResult {
  /** Requests made in the call, warm-up included (to divide the server's CPU by). */
  readonly total: number;
  readonly count: number;
  readonly rps: number;
  readonly latency: ReturnType<Samples["summary"]>;
  readonly statuses: Record<string, number>;
  readonly errors: number;
  readonly loadCpuPercent: number;
  readonly loadLagMs: number;
}

export function ticketRequest(port: number, token: string, origin: string | undefined, path = "/api/v1/auth/websocket_ticket"): Buffer {
  return renderRequest(`127.0.0.1:${port}`, {
    method: "POST",
    path,
    headers: { authorization: `Bearer ${token}`, ...(origin ? { origin } : {}) },
  });
}

export const commands: Record<string, Command> = {
  async mintTokens(p: { key: string; users: string[] }) {
    const t0 = performance.now();
    await mintUsers(p.key, p.users);
    return { users: state.users.length, ms: performance.now() - t0 };
  },

  async httpLoad(p: { port: number; path: string; concurrency: number; durationMs: number; warmupMs: number; origin?: string }): Promise<HttpLoadResult> {
    const requests = state.users.map((u) => ticketRequest(p.port, state.tokens.get(u)!, p.origin, p.path));
    if (requests.length === 0) throw new Error("mintTokens first");
    const conns = Array.from({ length: p.concurrency }, () => new HttpConn("127.0.0.1", p.port));
    const samples = new Samples();
    const statuses: Record<string, number> = {};
    let errors = 0;
    let next = 0;
    let total = 0;
    const begin = performance.now();
    const measureFrom = begin + p.warmupMs;
    const end = measureFrom + p.durationMs;
    let meter: ReturnType<typeof selfMeter> | undefined;
    let lag: ReturnType<typeof lagMeter> | undefined;
    const arm = setTimeout(() => {
      meter = selfMeter();
      lag = lagMeter();
    }, p.warmupMs);
    await Promise.all(
      conns.map(async (conn) => {
        for (;;) {
          const t0 = performance.now();
          if (t0 >= end) return;
          const bytes = requests[next++ % requests.length]!;
          try {
            const res = await conn.sendRaw(bytes);
            total++;
            if (t0 >= measureFrom) {
              samples.add(performance.now() - t0);
              statuses[res.status] = (statuses[res.status] ?? 0) + 1;
            }
          } catch {
            if (t0 >= measureFrom) errors++;
          }
        }
      }),
    );
    clearTimeout(arm);
    const cpu = meter?.();
    const worstLag = lag?.() ?? NaN;
    const wall = performance.now() - measureFrom;
    for (const conn of conns) conn.close();
    return {
      total,
      count: samples.count,
      rps: (samples.count / wall) * 1000,
      latency: samples.summary(),
      statuses,
      errors,
      loadCpuPercent: cpu?.percent ?? NaN,
      loadLagMs: worstLag,
    };
  },

  /** Issues `count` tickets (not timed as part of any measurement) and keeps them for redeem-only connects. */
  async issueTickets(p: { port: number; count: number; concurrency: number; origin?: string }) {
    const pool = new HttpPool("127.0.0.1", p.port, p.concurrency);
    const requests = state.users.map((u) => ticketRequest(p.port, state.tokens.get(u)!, p.origin));
    const t0 = performance.now();
    const failures: Record<string, number> = {};
    const tickets: string[] = [];
    let i = 0;
    await Promise.all(
      Array.from({ length: p.concurrency }, async () => {
        while (i < p.count) {
          const bytes = requests[i++ % requests.length]!;
          const res = await pool.requestRaw(bytes);
          if (res.status === 201) tickets.push((JSON.parse(res.body) as { ticket: string }).ticket);
          else failures[res.status] = (failures[res.status] ?? 0) + 1;
        }
      }),
    );
    pool.close();
    state.tickets.push(...tickets);
    return { issued: tickets.length, failures, ms: performance.now() - t0, held: state.tickets.length };
  },

  async dropTickets() {
    const n = state.tickets.length;
    state.tickets = [];
    return { dropped: n };
  },
};
