/**
 * Cross-instance delivery, from the client side. Each user has one socket,
 * on instance (u mod 2); each event for the user is published through the
 * other instance, so every delivery crosses the bus. The publisher and the
 * receivers live in this one process, so publish → receipt is measured on
 * one clock (performance.now() is carried in the event's data).
 *
 *   gateway   ws client, ticket from the socket's instance; events carry `seq`
 *   socketio  socket.io-client (WebSocket transport only, auth token)
 */
import { io, type Socket as IoSocket } from "socket.io-client";
import WebSocket from "ws";
import { HttpPool, renderRequest } from "../lib/http.js";
import { Samples } from "../lib/stats.js";
import { ticketRequest } from "./http-load.js";
import { lagMeter, selfMeter, sleep, state, type Command } from "./state.js";

type System = "gateway" | "socketio";

interface Receiver {
  readonly user: string;
  readonly instance: number;
  close(): void;
  /** Highest seq received in order; gaps and duplicates are counted. */
  last: number;
  received: number;
  gaps: number;
  dups: number;
}

let receivers: Receiver[] = [];
let samples: Samples | undefined;
let measureFrom = Infinity;
let system: System = "gateway";
let ports: number[] = [];
let serviceSecret = "";

function onEvent(r: Receiver, seq: number, t: number): void {
  r.received++;
  if (seq === r.last + 1) r.last = seq;
  else if (seq <= r.last) r.dups++;
  else {
    r.gaps++;
    r.last = seq;
  }
  if (t >= measureFrom && samples) samples.add(performance.now() - t);
}

async function connectGateway(user: string, instance: number, pool: HttpPool, origin: string | undefined): Promise<Receiver> {
  const port = ports[instance]!;
  const res = await pool.requestRaw(ticketRequest(port, state.tokens.get(user)!, origin));
  if (res.status !== 201) throw new Error(`ticket ${res.status}`);
  const ticket = (JSON.parse(res.body) as { ticket: string }).ticket;
  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws?ticket=${ticket}`, { perMessageDeflate: false, ...(origin ? { origin } : {}) });
  const r: Receiver = { user, instance, close: () => socket.close(1000), last: 0, received: 0, gaps: 0, dups: 0 };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no connection_established within 30 s")), 30_000);
    socket.on("error", reject);
    socket.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as { type: string; seq?: number; latest_seq?: number; data?: { t?: number } };
      if (frame.type === "connection_established") {
        r.last = frame.latest_seq ?? 0;
        clearTimeout(timer);
        resolve();
      } else if (typeof frame.seq === "number") onEvent(r, frame.seq, frame.data?.t ?? NaN);
    });
  });
  return r;
}

async function connectSocketIo(user: string, instance: number): Promise<Receiver> {
  const socket: IoSocket = io(`http://127.0.0.1:${ports[instance]}`, {
    transports: ["websocket"],
    auth: { token: state.tokens.get(user)! },
    reconnection: false,
    forceNew: true,
  });
  const r: Receiver = { user, instance, close: () => socket.disconnect(), last: 0, received: 0, gaps: 0, dups: 0 };
  socket.on("event", (e: { seq: number; data?: { t?: number } }) => onEvent(r, e.seq, e.data?.t ?? NaN));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no established within 30 s")), 30_000);
    socket.once("established", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  return r;
}

export const commands: Record<string, Command> = {
  async deliverySetup(p: { system: System; ports: number[]; users: string[]; serviceSecret: string; origin?: string; concurrency: number }) {
    system = p.system;
    ports = p.ports;
    serviceSecret = p.serviceSecret;
    const t0 = performance.now();
    const pools = ports.map((port) => new HttpPool("127.0.0.1", port, 16));
    let next = 0;
    const failures: Record<string, number> = {};
    await Promise.all(
      Array.from({ length: p.concurrency }, async () => {
        while (next < p.users.length) {
          const i = next++;
          const user = p.users[i]!;
          const instance = i % ports.length;
          try {
            receivers.push(system === "gateway" ? await connectGateway(user, instance, pools[instance]!, p.origin) : await connectSocketIo(user, instance));
          } catch (err) {
            const why = (err as Error).message.slice(0, 80);
            failures[why] = (failures[why] ?? 0) + 1;
          }
        }
      }),
    );
    for (const pool of pools) pool.close();
    return { connected: receivers.length, failures, ms: performance.now() - t0 };
  },

  /**
   * Publishes for `durationMs` after `warmupMs`, either open loop at `rate`
   * events/s or closed loop with `concurrency` publishes in flight, then
   * waits for stragglers and reports publish → receipt latency and how many
   * accepted events each socket got.
   */
  async deliveryRun(p: {
    rate?: number;
    concurrency?: number;
    durationMs: number;
    warmupMs: number;
    graceMs?: number;
    /** Publish through POST /internal/v1/events, `size` events per request: `perUser` consecutive events for each of size/perUser users. */
    batch?: { size: number; perUser: number };
  }) {
    const pools = ports.map((port) => new HttpPool("127.0.0.1", port, 64));
    const paths = receivers.map((r) => `/internal/v1/users/${encodeURIComponent(r.user)}/events`);
    const headers = { authorization: `Bearer ${serviceSecret}`, "x-service-id": "bench", "content-type": "application/json" };
    const receivedBefore = receivers.reduce((a, r) => a + r.received, 0);
    samples = new Samples();
    const begin = performance.now();
    measureFrom = begin + p.warmupMs;
    const end = measureFrom + p.durationMs;
    let accepted = 0;
    let acceptedInWindow = 0;
    const statuses: Record<string, number> = {};
    let next = 0;
    let meter: ReturnType<typeof selfMeter> | undefined;
    let lag: ReturnType<typeof lagMeter> | undefined;
    const arm = setTimeout(() => {
      meter = selfMeter();
      lag = lagMeter();
    }, p.warmupMs);
    // Batches: the users of one instance, so that every event of a batch crosses the bus like a single publish does.
    const byInstance = ports.map((_, n) => receivers.filter((r) => r.instance === n));
    let nextBatch = 0;
    const publishBatch = async (size: number, perUser: number): Promise<void> => {
      const b = nextBatch++;
      const instance = b % ports.length;
      const mine = byInstance[instance]!;
      const via = (instance + 1) % ports.length;
      const t = performance.now();
      const items: string[] = [];
      for (let k = 0; k < size; k++) {
        const r = mine[(Math.floor(b / ports.length) * (size / perUser) + Math.floor(k / perUser)) % mine.length]!;
        items.push(`{"user_id":${JSON.stringify(r.user)},"type":"agent_thinking","run_id":"run-bench","thread_id":"thread-bench","data":{"t":${t},"i":${b * size + k}}}`);
      }
      try {
        const res = await pools[via]!.requestRaw(renderRequest(pools[via]!.hostHeader, { method: "POST", path: "/internal/v1/events", headers, body: `[${items.join(",")}]` }));
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status === 207) {
          const ok = (JSON.parse(res.body) as { results: Array<{ seq?: number }> }).results.filter((x) => typeof x.seq === "number").length;
          accepted += ok;
          if (t >= measureFrom) acceptedInWindow += ok;
          if (ok !== size) statuses["item errors"] = (statuses["item errors"] ?? 0) + size - ok;
        }
      } catch (err) {
        const why = (err as Error).message.slice(0, 60);
        statuses[why] = (statuses[why] ?? 0) + 1;
      }
    };
    const publishOne = async (): Promise<void> => {
      if (p.batch !== undefined) return publishBatch(p.batch.size, p.batch.perUser);
      const i = next++;
      const r = receivers[i % receivers.length]!;
      // Through the instance that does not hold the user's socket.
      const via = (r.instance + 1) % ports.length;
      const t = performance.now();
      const body = `{"type":"agent_thinking","run_id":"run-bench","thread_id":"thread-bench","data":{"t":${t},"i":${i}}}`;
      try {
        const res = await pools[via]!.requestRaw(renderRequest(pools[via]!.hostHeader, { method: "POST", path: paths[i % paths.length]!, headers, body }));
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status === 202) {
          accepted++;
          if (t >= measureFrom) acceptedInWindow++;
        }
      } catch (err) {
        const why = (err as Error).message.slice(0, 60);
        statuses[why] = (statuses[why] ?? 0) + 1;
      }
    };
    if (p.rate !== undefined) {
      const interval = 1000 / p.rate;
      const inflight = new Set<Promise<void>>();
      let i = 0;
      while (begin + i * interval < end) {
        const now = performance.now();
        while (begin + i * interval <= now && begin + i * interval < end) {
          const pr = publishOne();
          inflight.add(pr);
          void pr.then(() => inflight.delete(pr));
          i++;
        }
        await sleep(1);
      }
      await Promise.all(inflight);
    } else {
      await Promise.all(
        Array.from({ length: p.concurrency ?? 64 }, async () => {
          while (performance.now() < end) await publishOne();
        }),
      );
    }
    clearTimeout(arm);
    const cpu = meter?.();
    const worstLag = lag?.() ?? NaN;
    const publishWall = performance.now() - measureFrom;
    // Wait (bounded) until every accepted event has arrived.
    const graceEnd = performance.now() + (p.graceMs ?? 5000);
    const receivedNow = () => receivers.reduce((a, r) => a + r.received, 0) - receivedBefore;
    while (receivedNow() < accepted && performance.now() < graceEnd) await sleep(20);
    for (const pool of pools) pool.close();
    const summary = samples.summary();
    samples = undefined;
    measureFrom = Infinity;
    return {
      accepted,
      received: receivedNow(),
      missing: accepted - receivedNow(),
      gaps: receivers.reduce((a, r) => a + r.gaps, 0),
      dups: receivers.reduce((a, r) => a + r.dups, 0),
      statuses,
      latency: summary,
      // Delivered events/s over the publishing window.
      throughput: (summary.count / publishWall) * 1000,
      acceptedPerSecond: (acceptedInWindow / publishWall) * 1000,
      loadCpuPercent: cpu?.percent ?? NaN,
      loadLagMs: worstLag,
    };
  },

  async deliveryClose() {
    for (const r of receivers) r.close();
    const n = receivers.length;
    receivers = [];
    await sleep(500);
    return { closed: n };
  },
};
