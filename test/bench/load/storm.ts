/**
 * Reconnect storm, from the clients' side, the same for both systems:
 *
 *   1. N clients connected (one per user), a steady event stream running.
 *   2. Every client's TCP connection is destroyed at once (no close frame:
 *      what a network drop or a dead proxy looks like). Clients hold off.
 *   3. One event per user is published while they are away, so every client
 *      has something it must get back.
 *   4. Released: each client reconnects after a uniform random delay in
 *      [0, jitterMs) (the SDK's first retry after a drop), retrying with the
 *      SDK's full-jitter backoff on failure.
 *        gateway   new ticket → upgrade → `resume {last_seq, epoch}` → resume_complete
 *        socketio  the same socket.io-client Socket reconnects (its pid and
 *                  offset are sent, connection state recovery replays)
 *   5. A client has recovered when it is connected again and has every seq of
 *      its user up to the event of step 3, contiguously. Then the stream stops
 *      and every client must hold exactly 1..last of its user: no hole, no
 *      duplicate, no resync.
 */
import { io, type Socket as IoSocket } from "socket.io-client";
import WebSocket from "ws";
import { HttpPool, renderRequest } from "../lib/http.js";
import { summarize } from "../lib/stats.js";
import { ticketRequest } from "./http-load.js";
import { lagMeter, selfMeter, sleep, state, type Command } from "./state.js";

type System = "gateway" | "socketio";

interface Client {
  readonly user: string;
  ws?: WebSocket;
  io?: IoSocket;
  epoch: string;
  last: number;
  readonly pending: Set<number>;
  dups: number;
  resyncs: number;
  /** Socket.IO: reconnected without its state. */
  lost: number;
  attempts: number;
  connected: boolean;
  resumed: boolean;
  recoveredAt: number | undefined;
  errors: Record<string, number>;
}

let clients: Client[] = [];
let system: System = "gateway";
let port = 0;
let origin: string | undefined;
let ticketPool: HttpPool | undefined;
let releasedAt = 0;
let burstSeq = new Map<string, number>();
let storming = false;

function accept(c: Client, seq: number): void {
  if (seq <= c.last || c.pending.has(seq)) {
    c.dups++;
    return;
  }
  if (seq === c.last + 1) {
    c.last = seq;
    while (c.pending.delete(c.last + 1)) c.last++;
  } else c.pending.add(seq);
  checkRecovered(c);
}

function checkRecovered(c: Client): void {
  if (!storming || c.recoveredAt !== undefined || !c.connected || !c.resumed) return;
  const target = burstSeq.get(c.user);
  if (target !== undefined && c.last >= target && c.pending.size === 0) c.recoveredAt = performance.now();
}

const count = (c: Client, why: string) => (c.errors[why] = (c.errors[why] ?? 0) + 1);

/** The SDK's schedule (service/client/backoff.ts): full jitter, base 500 ms, cap 30 s. */
const backoff = (attempt: number) => Math.floor(Math.random() * Math.min(30_000, 500 * 2 ** attempt));

// ── gateway ──

function openGateway(c: Client, ticket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?ticket=${ticket}`, { perMessageDeflate: false, ...(origin ? { origin } : {}) });
    c.ws = ws;
    let settled = false;
    const settle = (ok: boolean) => {
      if (!settled) {
        settled = true;
        resolve(ok);
      }
    };
    ws.on("error", () => undefined);
    ws.on("message", (data) => {
      const f = JSON.parse(data.toString()) as Record<string, unknown>;
      switch (f.type) {
        case "connection_established":
          c.connected = true;
          if (c.epoch === "") {
            c.epoch = f.epoch as string;
            c.last = f.latest_seq as number;
            c.resumed = true;
          } else ws.send(JSON.stringify({ type: "resume", last_seq: c.last, epoch: c.epoch }));
          settle(true);
          return;
        case "resume_complete":
          c.resumed = true;
          checkRecovered(c);
          return;
        case "resync_required":
          c.resyncs++;
          c.epoch = f.epoch as string;
          c.last = f.latest_seq as number;
          c.pending.clear();
          c.resumed = true;
          checkRecovered(c);
          return;
        case "error":
          count(c, String(f.code));
          return;
        default:
          if (typeof f.seq === "number") accept(c, f.seq);
      }
    });
    ws.on("close", (code) => {
      if (c.ws !== ws) return;
      c.connected = false;
      settle(false);
      if (storming && c.recoveredAt === undefined && code !== 1006) count(c, `close ${code}`);
    });
  });
}

async function connectGateway(c: Client): Promise<boolean> {
  const res = await ticketPool!.requestRaw(ticketRequest(port, state.tokens.get(c.user)!, origin)).catch((err: Error) => ({ status: 0, body: err.message, headers: {} as Record<string, string> }));
  if (res.status !== 201) {
    count(c, `ticket ${res.status}`);
    return false;
  }
  return openGateway(c, (JSON.parse(res.body) as { ticket: string }).ticket);
}

// ── socket.io ──

function makeSocketIo(c: Client): IoSocket {
  const socket = io(`http://127.0.0.1:${port}`, {
    transports: ["websocket"],
    auth: { token: state.tokens.get(c.user)! },
    // Reconnection is driven below, on the same schedule as the gateway's clients.
    reconnection: false,
    forceNew: true,
    autoConnect: false,
  });
  socket.on("event", (e: { seq: number }) => accept(c, e.seq));
  socket.on("connect", () => {
    c.connected = true;
    if (storming) {
      if (!socket.recovered) c.lost++;
      c.resumed = true;
      checkRecovered(c);
    } else c.resumed = true;
  });
  socket.on("disconnect", () => {
    c.connected = false;
  });
  return socket;
}

function connectSocketIo(c: Client): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = c.io!;
    const timer = setTimeout(() => done(false), 30_000);
    const onConnect = () => done(true);
    const onError = (err: Error) => {
      count(c, `connect_error ${err.message.slice(0, 40)}`);
      done(false);
    };
    function done(ok: boolean) {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      resolve(ok);
    }
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
    socket.connect();
  });
}

async function connectOnce(c: Client): Promise<boolean> {
  c.attempts++;
  return system === "gateway" ? connectGateway(c) : connectSocketIo(c);
}

async function reconnect(c: Client, deadline: number): Promise<void> {
  for (let attempt = 0; performance.now() < deadline; attempt++) {
    await sleep(attempt === 0 ? Math.floor(Math.random() * jitterMs) : backoff(attempt));
    if (await connectOnce(c)) return;
  }
}

let jitterMs = 500;

function dropAll(): void {
  for (const c of clients) {
    c.connected = false;
    c.resumed = false;
    if (c.ws) (c.ws as unknown as { _socket?: { destroy(): void } })._socket?.destroy();
    if (c.io) {
      const engine = (c.io.io as unknown as { engine?: { transport?: { ws?: { _socket?: { destroy(): void } } } } }).engine;
      engine?.transport?.ws?._socket?.destroy();
    }
  }
}

export const commands: Record<string, Command> = {
  async stormSetup(p: { system: System; port: number; users: string[]; origin?: string; concurrency: number; jitterMs: number; ticketConnections: number }) {
    system = p.system;
    port = p.port;
    origin = p.origin;
    jitterMs = p.jitterMs;
    storming = false;
    ticketPool = new HttpPool("127.0.0.1", port, p.ticketConnections);
    clients = p.users.map((user) => ({
      user,
      epoch: "",
      last: 0,
      pending: new Set<number>(),
      dups: 0,
      resyncs: 0,
      lost: 0,
      attempts: 0,
      connected: false,
      resumed: false,
      recoveredAt: undefined,
      errors: {},
    }));
    if (system === "socketio") for (const c of clients) c.io = makeSocketIo(c);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: p.concurrency }, async () => {
        while (next < clients.length) {
          const c = clients[next++]!;
          for (let i = 0; i < 5 && !(await connectOnce(c)); i++) await sleep(200);
        }
      }),
    );
    return { connected: clients.filter((c) => c.connected).length, ms: performance.now() - t0 };
  },

  async stormRun(p: { serviceSecret: string; rate: number; timeoutMs: number }) {
    const pubPool = new HttpPool("127.0.0.1", port, 32);
    const headers = { authorization: `Bearer ${p.serviceSecret}`, "x-service-id": "bench", "content-type": "application/json" };
    const lastAccepted = new Map<string, number>();
    const publishStatuses: Record<string, number> = {};
    const publish = async (user: string): Promise<number | undefined> => {
      const body = `{"type":"agent_thinking","run_id":"run-storm","thread_id":"thread-storm","data":{}}`;
      try {
        const res = await pubPool.requestRaw(renderRequest(pubPool.hostHeader, { method: "POST", path: `/internal/v1/users/${encodeURIComponent(user)}/events`, headers, body }));
        publishStatuses[res.status] = (publishStatuses[res.status] ?? 0) + 1;
        if (res.status !== 202) return undefined;
        const seq = (JSON.parse(res.body) as { seq: number }).seq;
        if (seq > (lastAccepted.get(user) ?? 0)) lastAccepted.set(user, seq);
        return seq;
      } catch (err) {
        const why = (err as Error).message.slice(0, 40);
        publishStatuses[why] = (publishStatuses[why] ?? 0) + 1;
        return undefined;
      }
    };
    // The steady stream, round-robin over the users, until stopped.
    let streaming = true;
    const steady = (async () => {
      const interval = 1000 / p.rate;
      const begin = performance.now();
      const inflight = new Set<Promise<unknown>>();
      for (let i = 0; streaming; ) {
        while (streaming && begin + i * interval <= performance.now()) {
          const pr = publish(clients[i % clients.length]!.user);
          inflight.add(pr);
          void pr.then(() => inflight.delete(pr));
          i++;
        }
        await sleep(2);
      }
      await Promise.all(inflight);
    })();

    await sleep(1000);
    // 2. Drop everyone at once.
    dropAll();
    await sleep(500);
    // 3. One event per user while they are away.
    const burstStart = performance.now();
    burstSeq = new Map();
    let bi = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (bi < clients.length) {
          const c = clients[bi++]!;
          for (let tries = 0; tries < 5; tries++) {
            const seq = await publish(c.user);
            if (seq !== undefined) {
              burstSeq.set(c.user, seq);
              break;
            }
          }
        }
      }),
    );
    const burstMs = performance.now() - burstStart;
    // 4. Release.
    for (const c of clients) c.attempts = 0;
    storming = true;
    const meter = selfMeter();
    const lag = lagMeter();
    releasedAt = performance.now();
    const deadline = releasedAt + p.timeoutMs;
    const reconnects = Promise.all(clients.map((c) => reconnect(c, deadline)));
    while (clients.some((c) => c.recoveredAt === undefined) && performance.now() < deadline) await sleep(20);
    const fullRecoveryMs = clients.every((c) => c.recoveredAt !== undefined) ? Math.max(...clients.map((c) => c.recoveredAt! - releasedAt)) : NaN;
    const cpu = meter();
    const worstLag = lag();
    await reconnects;
    // 5. Stop the stream, let the last events land, then check every client.
    await sleep(500);
    streaming = false;
    await steady;
    const settleEnd = performance.now() + 5000;
    const caughtUp = () => clients.every((c) => c.last >= (lastAccepted.get(c.user) ?? 0) && c.pending.size === 0);
    while (!caughtUp() && performance.now() < settleEnd) await sleep(50);
    storming = false;
    pubPool.close();
    const perClient = clients.filter((c) => c.recoveredAt !== undefined).map((c) => c.recoveredAt! - releasedAt);
    const errors: Record<string, number> = {};
    for (const c of clients) for (const [k, v] of Object.entries(c.errors)) errors[k] = (errors[k] ?? 0) + v;
    const incomplete = clients.filter((c) => c.last !== (lastAccepted.get(c.user) ?? 0) || c.pending.size > 0);
    return {
      clients: clients.length,
      recovered: perClient.length,
      fullRecoveryMs,
      recovery: summarize(perClient),
      contiguous: clients.length - incomplete.length,
      incompleteExamples: incomplete.slice(0, 3).map((c) => ({ user: c.user, last: c.last, want: lastAccepted.get(c.user), pending: [...c.pending].slice(0, 5) })),
      dups: clients.reduce((a, c) => a + c.dups, 0),
      resyncs: clients.reduce((a, c) => a + c.resyncs, 0),
      stateLost: clients.reduce((a, c) => a + c.lost, 0),
      attempts: clients.reduce((a, c) => a + c.attempts, 0),
      errors,
      publishStatuses,
      eventsPublished: [...lastAccepted.values()].length,
      burstMs,
      loadCpuPercent: cpu.percent,
      loadLagMs: worstLag,
    };
  },

  async stormClose() {
    for (const c of clients) {
      c.ws?.terminate();
      c.io?.disconnect();
    }
    const n = clients.length;
    clients = [];
    ticketPool?.close();
    await sleep(500);
    return { closed: n };
  },
};
