import { Writable } from "node:stream";
import { SignJWT } from "jose";
import WebSocket from "ws";
import type { FastifyInstance } from "fastify";
import { buildApp, type AppOptions } from "../../service/src/app.js";
import { parseConfig, type Config, type Env } from "../../service/src/config.js";
import { createLogger } from "../../service/src/logger.js";
import type { Store } from "../../service/src/plugins/store/types.js";

/** The test key: tests mint real HS256 JWTs with it; nothing is bypassed. */
export const TEST_JWT_KEY = "test-jwt-key-0123456789abcdef0123456789abcdef";
export const TEST_PREVIOUS_JWT_KEY = "test-previous-jwt-key-0123456789abcdef012345";
export const TEST_SERVICE_SECRET = "test-service-secret-0123456789abcdef0123456789";
export const ORIGIN = "https://chat.example.test";

export function testConfig(overrides: Env = {}): Config {
  return parseConfig({
    JWT_SECRET_KEY: TEST_JWT_KEY,
    JWT_SECRET_KEY_PREVIOUS: TEST_PREVIOUS_JWT_KEY,
    SERVICE_SECRET: TEST_SERVICE_SECRET,
    ALLOWED_ORIGINS: ORIGIN,
    HOST: "127.0.0.1",
    PORT: "0",
    ...overrides,
  });
}

export async function mintToken(
  claims: { sub?: string; expiresInSeconds?: number; exp?: number; iss?: string; aud?: string } = {},
  key = TEST_JWT_KEY,
): Promise<string> {
  const jwt = new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuedAt();
  if (claims.sub !== undefined) jwt.setSubject(claims.sub);
  else jwt.setSubject("user-1");
  jwt.setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + (claims.expiresInSeconds ?? 3600));
  if (claims.iss) jwt.setIssuer(claims.iss);
  if (claims.aud) jwt.setAudience(claims.aud);
  return jwt.sign(new TextEncoder().encode(key));
}

/** Captures every log line the app writes, to prove what never reaches a log. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    done();
  }
  get records(): Array<Record<string, unknown>> {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
  get text(): string {
    return this.lines.join("\n");
  }
}

export interface TestGateway {
  readonly app: FastifyInstance;
  readonly config: Config;
  readonly url: string;
  readonly wsUrl: string;
  readonly logs: LogCapture;
  close(): Promise<void>;
}

/** A real gateway on a free loopback port. Pass a store to share one between instances. */
export async function startGateway(
  options: { env?: Env; store?: Store; metrics?: boolean; httpTimeouts?: AppOptions["httpTimeouts"] } = {},
): Promise<TestGateway> {
  const config = testConfig(options.env);
  const logs = new LogCapture();
  const app = await buildApp({
    config,
    logger: createLogger({ level: "debug", destination: logs }),
    store: options.store,
    metricsPort: options.metrics ? 0 : null,
    httpTimeouts: options.httpTimeouts,
  });
  const url = await app.listen({ port: 0, host: "127.0.0.1" });
  return { app, config, url, wsUrl: url.replace(/^http/, "ws"), logs, close: () => app.close() };
}

export async function requestTicket(
  gateway: { url: string },
  token: string | undefined,
  headers: Record<string, string> = { origin: ORIGIN },
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${gateway.url}/api/v1/auth/websocket_ticket`, {
    method: "POST",
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers };
}

export async function ticketFor(gateway: { url: string }, sub = "user-1", origin = ORIGIN): Promise<string> {
  const { status, body } = await requestTicket(gateway, await mintToken({ sub }), { origin });
  if (status !== 201) throw new Error(`ticket request failed: ${status} ${JSON.stringify(body)}`);
  return body.ticket as string;
}

/** A real `ws` client that records every frame and how it closed. */
export class TestClient {
  readonly frames: Array<Record<string, unknown>> = [];
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: Array<() => void> = [];

  constructor(url: string, options: WebSocket.ClientOptions & { protocols?: string | string[] } = {}) {
    const { protocols, ...rest } = options;
    this.socket = new WebSocket(url, protocols, { origin: ORIGIN, ...rest });
    this.opened = new Promise((resolve, reject) => {
      this.socket.once("open", () => resolve());
      this.socket.once("error", reject);
    });
    this.closed = new Promise((resolve) => {
      this.socket.once("close", (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    this.socket.on("error", () => undefined);
    this.socket.on("message", (data) => {
      this.frames.push(JSON.parse(data.toString()) as Record<string, unknown>);
      for (const w of this.waiters.splice(0)) w();
    });
    this.socket.on("close", () => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async connect(gateway: { wsUrl: string }, ticket: string, options: WebSocket.ClientOptions = {}): Promise<TestClient> {
    const client = new TestClient(`${gateway.wsUrl}/ws?ticket=${encodeURIComponent(ticket)}`, options);
    await client.opened;
    return client;
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Resolves with the first frame (from index `from`) that matches, or rejects after `timeoutMs`. */
  async waitFor(predicate: (f: Record<string, unknown>) => boolean, options: { from?: number; timeoutMs?: number } = {}): Promise<Record<string, unknown>> {
    const deadline = Date.now() + (options.timeoutMs ?? 5000);
    for (;;) {
      const found = this.frames.slice(options.from ?? 0).find(predicate);
      if (found) return found;
      if (this.socket.readyState === WebSocket.CLOSED) throw new Error(`socket closed before the frame arrived; frames: ${JSON.stringify(this.frames)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; frames: ${JSON.stringify(this.frames).slice(0, 2000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => (clearTimeout(t), resolve()));
      });
    }
  }

  waitForType(type: string, options: { from?: number; timeoutMs?: number } = {}) {
    return this.waitFor((f) => f.type === type, options);
  }

  /** The seqs of the agent events received, in arrival order. */
  get seqs(): number[] {
    return this.frames.filter((f) => typeof f.seq === "number").map((f) => f.seq as number);
  }

  close(): void {
    this.socket.close(1000);
  }
}

export async function publishEvent(
  gateway: { url: string },
  userId: string,
  event: { type?: string; run_id?: string; thread_id?: string; data?: Record<string, unknown> } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gateway.url}/internal/v1/users/${encodeURIComponent(userId)}/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "test-agent", "content-type": "application/json" },
    body: JSON.stringify({ type: "agent_thinking", run_id: "run-1", thread_id: "thread-1", data: {}, ...event }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}
