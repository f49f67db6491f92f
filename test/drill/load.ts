/**
 * The steady load of drill 8, the pieces that do not depend on the rotations:
 * the outcome counts, a fixed-rate loop, and a short connection.
 */
import WebSocket from "ws";
import { ORIGIN, sleep, ticket } from "./lib.js";

/** Outcome counts by kind ("ticket 201", "publish 401", …), and the failures' details. */
export class Tally {
  readonly counts: Record<string, number> = {};
  readonly failures: string[] = [];
  note(kind: string, outcome: string | number, ok: boolean): void {
    const key = `${kind} ${outcome}`;
    this.counts[key] = (this.counts[key] ?? 0) + 1;
    if (!ok && this.failures.length < 20) this.failures.push(key);
  }
  get failed(): number {
    return Object.entries(this.counts).reduce((n, [key, count]) => (/ (201|202|ok)$/.test(key) ? n : n + count), 0);
  }
}

/** Runs `body(i)` every `intervalMs` (without waiting for it) while `go()`; resolves when the last one has finished. */
export async function every(intervalMs: number, go: () => boolean, body: (i: number) => Promise<void>): Promise<void> {
  const inflight = new Set<Promise<void>>();
  for (let i = 0; go(); i++) {
    const p = body(i).catch(() => undefined);
    inflight.add(p);
    void p.then(() => inflight.delete(p));
    await sleep(intervalMs);
  }
  await Promise.all(inflight);
}

/** A ticket, a connection established, a normal close: "ok", or what went wrong. */
export async function shortConnection(url: string, user: string, token: string): Promise<string> {
  const t = await ticket(url, user, token).catch((err: Error) => ({ status: err.message, ticket: undefined }));
  if (t.status !== 201 || !t.ticket) return `ticket ${t.status}`;
  return new Promise<string>((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/ws?ticket=${t.ticket}`, { origin: ORIGIN, perMessageDeflate: false });
    const timer = setTimeout(() => (ws.terminate(), resolve("no connection_established within 10 s")), 10_000);
    ws.on("error", () => undefined);
    ws.on("message", (data) => {
      const f = JSON.parse(data.toString()) as { type?: string; code?: string };
      if (f.type === "connection_established") {
        clearTimeout(timer);
        ws.close(1000);
        resolve("ok");
      } else if (f.type === "error") {
        clearTimeout(timer);
        resolve(`refused ${f.code}`);
      }
    });
    ws.on("close", (code) => {
      clearTimeout(timer);
      resolve(`closed ${code}`);
    });
  });
}
