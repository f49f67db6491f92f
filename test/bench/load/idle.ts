/**
 * Many idle connections, held open: `ws` clients that answer the server's
 * protocol pings (ws does that by itself) and do nothing else. Gateway
 * clients connect the real way (ticket, then upgrade, then
 * connection_established); bare clients just upgrade.
 */
import WebSocket from "ws";
import { HttpPool } from "../lib/http.js";
import { ticketRequest } from "./http-load.js";
import { state, type Command } from "./state.js";

interface Held {
  socket: WebSocket;
  closedWith?: number;
}
let held: Held[] = [];
let pings = 0;

function openOne(url: string, origin: string | undefined): Promise<Held> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { perMessageDeflate: false, ...(origin ? { origin } : {}) });
    const h: Held = { socket };
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error("no first frame within 30 s"));
    }, 30_000);
    socket.once("message", (data) => {
      clearTimeout(timer);
      const text = data.toString();
      if (!text.startsWith('{"type":"connection_established"')) {
        socket.terminate();
        reject(new Error(`first frame: ${text.slice(0, 200)}`));
        return;
      }
      state.openSockets++;
      resolve(h);
    });
    socket.on("ping", () => pings++);
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on("close", (code) => {
      if (h.closedWith === undefined) {
        h.closedWith = code;
        state.openSockets--;
      }
    });
  });
}

export const commands: Record<string, Command> = {
  async idleOpen(p: { port: number; mode: "gateway" | "bare"; count: number; concurrency: number; origin?: string }) {
    const t0 = performance.now();
    const pool = p.mode === "gateway" ? new HttpPool("127.0.0.1", p.port, Math.min(64, p.concurrency)) : undefined;
    const requests = p.mode === "gateway" ? state.users.map((u) => ticketRequest(p.port, state.tokens.get(u)!, p.origin)) : [];
    const failures: Record<string, number> = {};
    let next = 0;
    await Promise.all(
      Array.from({ length: p.concurrency }, async () => {
        while (next < p.count) {
          const i = next++;
          try {
            let url = `ws://127.0.0.1:${p.port}/ws`;
            if (pool) {
              const res = await pool.requestRaw(requests[i % requests.length]!);
              if (res.status !== 201) throw new Error(`ticket ${res.status}`);
              url += `?ticket=${(JSON.parse(res.body) as { ticket: string }).ticket}`;
            }
            held.push(await openOne(url, p.origin));
          } catch (err) {
            const why = (err as Error).message.slice(0, 80);
            failures[why] = (failures[why] ?? 0) + 1;
          }
        }
      }),
    );
    pool?.close();
    return { open: state.openSockets, held: held.length, failures, ms: performance.now() - t0, rss: process.memoryUsage().rss };
  },

  async idleStatus() {
    const codes: Record<string, number> = {};
    for (const h of held) if (h.closedWith !== undefined) codes[h.closedWith] = (codes[h.closedWith] ?? 0) + 1;
    return { held: held.length, open: state.openSockets, closed: codes, pings };
  },

  async idleClose() {
    const t0 = performance.now();
    const all = held;
    held = [];
    await Promise.all(
      all.map(
        (h) =>
          new Promise<void>((resolve) => {
            if (h.closedWith !== undefined) return resolve();
            const timer = setTimeout(() => {
              h.socket.terminate();
              resolve();
            }, 5000);
            h.socket.once("close", () => {
              clearTimeout(timer);
              resolve();
            });
            h.socket.close(1000);
          }),
      ),
    );
    pings = 0;
    return { closed: all.length, ms: performance.now() - t0 };
  },
};
