/**
 * Helpers for the SDK's integration tests: a GatewayClient wired to a real
 * gateway (with a real redis-server), with every ticket request and every
 * socket recorded, and sockets whose traffic a test can delay, drop or
 * duplicate, to produce on purpose what a network produces by accident.
 */
import { afterAll, afterEach, beforeAll } from "vitest";
import WebSocket from "ws";
import { buildApp } from "../../service/src/app.js";
import { createLogger } from "../../service/src/logger.js";
import type { Env } from "../../service/src/config.js";
import { GatewayClient, type GatewayClientOptions } from "../../service/client/GatewayClient.js";
import type { AckEvent, AgentEvent, ClientError, ResyncEvent, StateChange, Timers, WebSocketLike } from "../../service/client/types.js";
import { LogCapture, mintToken, ORIGIN, testConfig, type TestGateway } from "../support/gateway.js";
import { startTestAgent, type TestAgent } from "../support/agent.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { until } from "../support/wait.js";

/** A gateway on a given port (0: any), so a test can start a "restarted" instance where the old one listened. */
export async function startGatewayOn(port: number, env: Env): Promise<TestGateway> {
  const config = testConfig({ ...env, PORT: String(port) });
  const logs = new LogCapture();
  const app = await buildApp({ config, logger: createLogger({ level: "debug", destination: logs }), metricsPort: null });
  const url = await app.listen({ port, host: "127.0.0.1" });
  return { app, config, url, wsUrl: url.replace(/^http/, "ws"), logs, close: () => app.close() };
}

/** A gateway with the example agent backend of its own behind its chat hand-off; close() stops both. */
export async function startGatewayWithAgent(env: Env): Promise<TestGateway> {
  const agent = await startTestAgent();
  const gateway = await startGatewayOn(0, { ...agent.env, ...env });
  agent.pointAt(gateway);
  return { ...gateway, close: async () => (await gateway.close(), await agent.close()) };
}

/** What a test file's `gatewaySuite()` started; read it inside tests and hooks (it is set in beforeAll). */
export interface GatewaySuite {
  readonly redis: RedisServerHandle;
  readonly gw: TestGateway;
  /** A client of the suite's gateway (clientFor), closed after the current test. */
  client(userId: string, options?: ClientOptions): ClientUnderTest;
  /** Closes the client after the current test. */
  track(c: ClientUnderTest): ClientUnderTest;
  /** Closes `client` (any client: a SharedGatewayClient, …) after the current test. */
  closeAfterTest(client: { close(): void }): void;
}

/**
 * The setup every SDK integration file shares: a redis-server and a gateway
 * on it (with `env`; with the example agent backend when `agent`), started
 * once for the file and stopped after it; the clients a test tracks are
 * closed after that test.
 */
export function gatewaySuite(env: Env = {}, options: { agent?: boolean } = {}): GatewaySuite {
  let redis: RedisServerHandle | undefined;
  let gw: TestGateway | undefined;
  const live: Array<{ close(): void }> = [];
  beforeAll(async () => {
    redis = await startRedis();
    const gatewayEnv = { REDIS_URL: redis.url, ...env };
    gw = options.agent ? await startGatewayWithAgent(gatewayEnv) : await startGatewayOn(0, gatewayEnv);
  });
  afterEach(() => {
    for (const client of live.splice(0)) client.close();
  });
  afterAll(async () => {
    await gw?.close();
    await redis?.stop();
  });
  return {
    get redis() {
      if (!redis) throw new Error("gatewaySuite: redis is set in beforeAll");
      return redis;
    },
    get gw() {
      if (!gw) throw new Error("gatewaySuite: the gateway is set in beforeAll");
      return gw;
    },
    client(userId, clientOptions) {
      return this.track(clientFor(this.gw, userId, clientOptions));
    },
    track(c) {
      live.push(c.client);
      return c;
    },
    closeAfterTest(client) {
      live.push(client);
    },
  };
}

export function portOf(gateway: { url: string }): number {
  return Number(new URL(gateway.url).port);
}

export interface TicketRequestRecord {
  readonly at: number;
  readonly authorization: string | undefined;
  readonly status: number | "network-error";
  readonly retryAfter?: string | null;
}

/** fetch that records the ticket requests and, like a browser, sends an Origin; `inner` is the fetch it wraps. */
export function recordingFetch(origin: string | null = ORIGIN, inner: typeof fetch = fetch): { fetch: typeof fetch; requests: TicketRequestRecord[] } {
  const requests: TicketRequestRecord[] = [];
  const wrapped: typeof fetch = async (input, init) => {
    const headers = new Headers(init?.headers);
    if (origin !== null) headers.set("origin", origin);
    const at = Date.now();
    try {
      const response = await inner(input, { ...init, headers });
      requests.push({ at, authorization: headers.get("authorization") ?? undefined, status: response.status, retryAfter: response.headers.get("retry-after") });
      return response;
    } catch (err) {
      requests.push({ at, authorization: headers.get("authorization") ?? undefined, status: "network-error" });
      throw err;
    }
  };
  return { fetch: wrapped, requests };
}

export interface SocketHooks {
  /** Return "drop" to lose an incoming frame, "twice" to deliver it twice. */
  incoming?: (data: string, socket: TestSocket) => "pass" | "drop" | "twice";
  /** Called instead of sending; `send()` sends the frame for real (now or later). */
  outgoing?: (data: string, send: (data: string | Buffer) => void) => void;
  /** Rewrites the close event the SDK sees (WebKit reports some server closes as 1006 with no reason). */
  close?: (event: { code: number; reason: string }) => { code: number; reason: string };
}

/** Every socket the SDK opened, in order, and every frame it sent. */
export interface SocketLog {
  readonly urls: string[];
  readonly sent: Array<Record<string, unknown>>;
  readonly sockets: TestSocket[];
}

/** A WebSocketLike over a real `ws` client, with the test's hooks in its path. */
export class TestSocket implements WebSocketLike {
  readonly real: WebSocket;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    private readonly log: SocketLog,
    private readonly hooks: SocketHooks,
    origin: string | null,
  ) {
    this.real = new WebSocket(url, origin === null ? {} : { origin });
    log.urls.push(url);
    log.sockets.push(this);
    this.real.onopen = (event) => this.onopen?.(event);
    this.real.onerror = (event) => this.onerror?.(event);
    this.real.onclose = (event) => {
      const seen = { code: event.code, reason: event.reason };
      this.onclose?.(hooks.close?.(seen) ?? seen);
    };
    this.real.onmessage = (event) => {
      const data = String(event.data);
      const verdict = hooks.incoming?.(data, this) ?? "pass";
      if (verdict === "drop") return;
      this.onmessage?.({ data });
      if (verdict === "twice") this.onmessage?.({ data });
    };
  }

  get readyState(): number {
    return this.real.readyState;
  }

  send(data: string): void {
    this.log.sent.push(JSON.parse(data) as Record<string, unknown>);
    if (this.hooks.outgoing) this.hooks.outgoing(data, (d) => this.real.readyState === WebSocket.OPEN && this.real.send(d));
    else this.real.send(data);
  }

  close(code?: number, reason?: string): void {
    this.real.close(code, reason);
  }
}

export function socketFactory(options: { origin?: string | null; hooks?: SocketHooks } = {}): { WebSocket: GatewayClientOptions["WebSocket"] & object; log: SocketLog } {
  const log: SocketLog = { urls: [], sent: [], sockets: [] };
  const origin = options.origin === undefined ? ORIGIN : options.origin;
  const hooks = options.hooks ?? {};
  return {
    log,
    WebSocket: class extends TestSocket {
      constructor(url: string) {
        super(url, log, hooks, origin);
      }
    },
  };
}

/** Everything a client reported, in order. */
export class Recorder {
  readonly states: StateChange[] = [];
  readonly events: AgentEvent[] = [];
  readonly resyncs: ResyncEvent[] = [];
  readonly errors: ClientError[] = [];
  readonly acks: AckEvent[] = [];

  attach(client: GatewayClient): void {
    client.on("state", (s) => this.states.push(s));
    client.on("event", (e) => this.events.push(e));
    client.on("resync", (r) => this.resyncs.push(r));
    client.on("error", (e) => this.errors.push(e));
    client.on("ack", (a) => this.acks.push(a));
  }

  get seqs(): number[] {
    return this.events.map((e) => e.seq);
  }

  get opens(): number {
    return this.states.filter((s) => s.state === "open").length;
  }

  /** Delays of the scheduled retries, in order. */
  get retryDelays(): number[] {
    return this.states.filter((s) => s.retryInMs !== undefined).map((s) => s.retryInMs!);
  }
}

export interface ClientUnderTest {
  readonly client: GatewayClient;
  readonly rec: Recorder;
  readonly tickets: TicketRequestRecord[];
  readonly sockets: SocketLog;
  readonly tokenRequests: Array<{ forceRefresh: boolean }>;
  /** How many of the SDK's timers are scheduled and not yet fired or cleared. */
  pendingTimers(): number;
  /** The delays (ms) those timers were set with, in the order they were set. */
  pendingDelays(): number[];
}

/**
 * The SDK's timers (real ones unless `inner` is given), counting those still pending. With no
 * timer pending, no socket and no network listener, the SDK cannot act again: a "nothing else
 * happens" check can assert that instead of sleeping and hoping.
 */
export function countingTimers(inner: Timers = { setTimeout: (cb, ms) => setTimeout(cb, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) }) {
  const pending = new Map<unknown, number>();
  const timers: Timers = {
    setTimeout(callback, ms) {
      const handle = inner.setTimeout(() => (pending.delete(handle), callback()), ms);
      pending.set(handle, ms);
      return handle;
    },
    clearTimeout(handle) {
      pending.delete(handle);
      inner.clearTimeout(handle);
    },
  };
  return { timers, pending: () => pending.size, delays: () => [...pending.values()] };
}

export type ClientOptions = Partial<GatewayClientOptions> & {
  connect?: boolean;
  /** The Origin of the sockets (default ORIGIN; null: none). */
  origin?: string | null;
  /** The Origin of the ticket requests (default: the sockets'). */
  fetchOrigin?: string | null;
  hooks?: SocketHooks;
};

/**
 * A client of `gateway` for `userId`, connected at once unless `connect: false`.
 * Tokens are minted fresh for each getToken() call unless `getToken` is given.
 */
export function clientFor(gateway: { url: string }, userId: string, options: ClientOptions = {}): ClientUnderTest {
  const { connect = true, origin, fetchOrigin, hooks, fetch: innerFetch, ...rest } = options;
  const socketOrigin = origin === undefined ? ORIGIN : origin;
  const recorded = recordingFetch(fetchOrigin === undefined ? socketOrigin : fetchOrigin, innerFetch ?? fetch);
  const sockets = socketFactory({ origin: socketOrigin, hooks });
  const tokenRequests: Array<{ forceRefresh: boolean }> = [];
  const getToken = rest.getToken ?? (() => mintToken({ sub: userId }));
  const counted = countingTimers(rest.timers);
  const client = new GatewayClient({
    url: gateway.url,
    WebSocket: sockets.WebSocket,
    fetch: recorded.fetch,
    window: null,
    ...rest,
    timers: counted.timers,
    getToken: (request) => {
      tokenRequests.push(request);
      return getToken(request);
    },
  });
  const rec = new Recorder();
  rec.attach(client);
  if (connect) client.connect();
  return { client, rec, tickets: recorded.requests, sockets: sockets.log, tokenRequests, pendingTimers: counted.pending, pendingDelays: counted.delays };
}

/** Resolves once the client is open (the nth time, counting from 1). */
export function opened(c: ClientUnderTest, nth = 1, timeoutMs = 5000): Promise<true> {
  return until(`open #${nth}`, () => c.rec.opens >= nth, timeoutMs);
}

/** The frames the client sent of one type. */
export function sentOfType(c: ClientUnderTest, type: string): Array<Record<string, unknown>> {
  return c.sockets.sent.filter((f) => f.type === type);
}

/** Seqs 1..n, checked as a contiguous run starting at `from`. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
