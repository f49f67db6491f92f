/**
 * chat_message → the agent backend (docs/protocol.md §5a), against real
 * gateways, a real redis-server and real HTTP backends: the example agent
 * backend, and backends that misbehave on purpose (slow, down, 5xx, 3xx,
 * 4xx, not HTTP at all). An ack means the backend answered 2xx in time;
 * everything else is a non-fatal frame naming the message id, and the socket
 * stays open.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from "node:net";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";
import { startTestAgent, TEST_WEBHOOK_SECRET, type TestAgent } from "../support/agent.js";
import { sleep } from "../support/wait.js";

let redis: RedisServerHandle;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

async function connect(gw: TestGateway, user: string) {
  const client = await TestClient.connect(gw, await ticketFor(gw, user));
  await client.waitForType("connection_established");
  return client;
}

const chat = (id: string, text = "hello") => ({ type: "chat_message", message_id: id, thread_id: "thread-1", text });
const errorFor = (client: TestClient, id: string) => client.waitFor((f) => f.type === "error" && f.message_id === id, { timeoutMs: 8000 });
const acked = (client: TestClient, id: string) => client.frames.some((f) => f.type === "ack" && f.message_id === id);

/** The socket is still open and serving: a ping is answered. */
async function stillServes(client: TestClient) {
  const from = client.frames.length;
  client.send({ type: "ping", id: "alive?" });
  await client.waitFor((f) => f.type === "pong" && f.id === "alive?", { from });
}

describe("with the example agent backend, two instances", () => {
  let agent: TestAgent;
  let gws: TestGateway[];
  beforeAll(async () => {
    agent = await startTestAgent();
    gws = await Promise.all([0, 1].map(() => startGateway({ env: { REDIS_URL: redis.url, ...agent.env } })));
    agent.pointAt(gws[1]!);
  });
  afterAll(async () => {
    await Promise.all(gws.map((g) => g.close()));
    await agent.close();
  });

  it("acks a chat_message and the backend runs it: started, thinking, tool executing, tool completed, completed", async () => {
    const client = await connect(gws[0]!, "chatter");
    client.send(chat("m-1", "What is a ticket?"));
    expect(await client.waitForType("ack")).toEqual({ type: "ack", message_id: "m-1" });
    await client.waitForType("agent_completed");
    const events = client.frames.filter((f) => typeof f.seq === "number");
    expect(events.map((f) => f.type)).toEqual(["agent_started", "agent_thinking", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]);
    expect(events.map((f) => f.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(new Set(events.map((f) => f.run_id)).size).toBe(1);
    expect(events.every((f) => f.thread_id === "thread-1")).toBe(true);
    client.close();
  });

  it("acks a repeated message_id again but does not run it twice, even from another instance", async () => {
    const first = await connect(gws[0]!, "repeater");
    first.send(chat("dup", "once"));
    await first.waitForType("agent_completed");
    first.close();
    const second = await connect(gws[1]!, "repeater");
    second.send(chat("dup", "once"));
    expect(await second.waitForType("ack")).toEqual({ type: "ack", message_id: "dup" });
    // A fence instead of a fixed sleep: a new message sent after the repeat; once its run has
    // completed, a second run of "dup" (handed off before it) would have started too.
    second.send(chat("fence", "after the repeat"));
    await second.waitForType("agent_completed");
    const started = second.frames.filter((f) => f.type === "agent_started");
    expect(started.map((f) => (f.data as { message_id?: unknown }).message_id)).toEqual(["fence"]);
    second.close();
  });

  it("ends a failing run with agent_error", async () => {
    const client = await connect(gws[0]!, "unlucky-chatter");
    client.send(chat("m-fail", "please /fail"));
    const error = await client.waitForType("agent_error");
    expect(error.data).toMatchObject({ error: "TOOL_FAILED" });
    expect(client.frames.some((f) => f.type === "agent_completed")).toBe(false);
    client.close();
  });

  it("passes on a backend's 4xx as MESSAGE_REJECTED naming the message: no ack, nothing run, the socket stays", async () => {
    const client = await connect(gws[0]!, "refused");
    client.send(chat("m-no", "please /reject this"));
    const error = await errorFor(client, "m-no");
    expect(error).toMatchObject({ code: "MESSAGE_REJECTED", fatal: false, message_id: "m-no" });
    expect(error.message).toContain("HTTP 422");
    await stillServes(client);
    expect(acked(client, "m-no")).toBe(false);
    expect(client.frames.some((f) => f.type === "agent_started")).toBe(false);
    client.close();
  });
});

/** A backend under the test's control: it verifies every request like a real one, then answers as told. */
interface FakeBackend {
  readonly url: string;
  readonly requests: Array<{ headers: IncomingMessage["headers"]; body: string; verified: unknown }>;
  answer: (req: IncomingMessage, res: ServerResponse) => void;
  close(): Promise<void>;
}

async function fakeBackend(): Promise<FakeBackend> {
  const verifier = new Webhook(TEST_WEBHOOK_SECRET);
  const backend: FakeBackend = {
    url: "",
    requests: [],
    answer: (_req, res) => res.writeHead(200).end(),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createHttpServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    let verified: unknown;
    try {
      verified = verifier.verify(body, req.headers as Record<string, string>);
    } catch (err) {
      verified = err;
    }
    backend.requests.push({ headers: req.headers, body, verified });
    backend.answer(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  (backend as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook?token=s3cr3t-in-url`;
  return backend;
}

describe("against misbehaving backends", () => {
  let backend: FakeBackend;
  let gw: TestGateway;
  beforeAll(async () => {
    backend = await fakeBackend();
    gw = await startGateway({ env: { REDIS_URL: redis.url, AGENT_WEBHOOK_URL: backend.url, AGENT_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, AGENT_WEBHOOK_TIMEOUT_MS: "400" } });
  });
  afterAll(async () => {
    await gw.close();
    await backend.close();
  });

  it("POSTs the message signed per Standard Webhooks, webhook-id = message id, and acks on 2xx", async () => {
    backend.answer = (_req, res) => res.writeHead(204).end();
    const client = await connect(gw, "signed");
    const before = Date.now();
    client.send({ type: "chat_message", message_id: "m-signed", thread_id: "t-9", text: "sign me" });
    expect(await client.waitForType("ack")).toEqual({ type: "ack", message_id: "m-signed" });
    const request = backend.requests.at(-1)!;
    expect(request.verified).toEqual({
      message_id: "m-signed",
      user_id: "signed",
      thread_id: "t-9",
      text: "sign me",
      received_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      connection_id: expect.any(String),
    });
    expect(Date.parse((request.verified as { received_at: string }).received_at)).toBeGreaterThanOrEqual(before - 1000);
    expect(request.headers["webhook-id"]).toBe("m-signed");
    expect(request.headers["content-type"]).toBe("application/json");
    expect(Math.abs(Number(request.headers["webhook-timestamp"]) - Date.now() / 1000)).toBeLessThan(5);
    expect(request.headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/=]+$/);
    client.close();
  });

  const faults: Array<[string, (req: IncomingMessage, res: ServerResponse) => void]> = [
    ["is slow (no answer within AGENT_WEBHOOK_TIMEOUT_MS)", () => undefined],
    ["answers 503", (_req, res) => res.writeHead(503).end("busy")],
    ["answers 500 with garbage", (_req, res) => res.writeHead(500).end("\u0000\u00ff not json")],
    ["redirects (302)", (_req, res) => res.writeHead(302, { location: "http://127.0.0.1:1/elsewhere" }).end()],
    ["drops the connection", (req) => req.socket.destroy()],
  ];
  for (const [name, answer] of faults) {
    it(`answers AGENT_UNAVAILABLE, no ack, when the backend ${name}; the resend is handed off again with the same webhook-id`, async () => {
      backend.answer = answer;
      const user = `fault-${name.length}-${Math.random().toString(36).slice(2, 6)}`;
      const client = await connect(gw, user);
      const id = `m-${user}`;
      const started = Date.now();
      client.send(chat(id));
      const error = await errorFor(client, id);
      expect(error).toMatchObject({ code: "AGENT_UNAVAILABLE", fatal: false, message_id: id });
      expect(Date.now() - started).toBeLessThan(3000); // bounded by the 400 ms timeout, with room for a loaded machine
      expect(acked(client, id)).toBe(false);
      await stillServes(client);

      backend.answer = (_req, res) => res.writeHead(200).end("ok");
      const from = client.frames.length;
      client.send(chat(id));
      await client.waitFor((f) => f.type === "ack" && f.message_id === id, { from });
      const mine = backend.requests.filter((r) => r.headers["webhook-id"] === id);
      expect(mine.length).toBe(2);
      expect(mine.every((r) => !(r.verified instanceof Error))).toBe(true);
      client.close();
    });
  }

  it("does not follow a redirect: the signed body goes only to the configured URL", async () => {
    let elsewhere = 0;
    const target = createHttpServer((_req, res) => (elsewhere++, res.writeHead(200).end()));
    await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", () => resolve()));
    backend.answer = (_req, res) => res.writeHead(307, { location: `http://127.0.0.1:${(target.address() as AddressInfo).port}/` }).end();
    const client = await connect(gw, "redirected");
    client.send(chat("m-307"));
    expect(await errorFor(client, "m-307")).toMatchObject({ code: "AGENT_UNAVAILABLE" });
    expect(elsewhere).toBe(0);
    client.close();
    await new Promise<void>((resolve) => target.close(() => resolve()));
  });

  it("answers a 4xx with MESSAGE_REJECTED once and does not retry it by itself", async () => {
    backend.answer = (_req, res) => res.writeHead(400, { "content-type": "application/json" }).end('{"error":"no"}');
    const client = await connect(gw, "rejected");
    client.send(chat("m-400"));
    const error = await errorFor(client, "m-400");
    expect(error).toMatchObject({ code: "MESSAGE_REJECTED", fatal: false, message_id: "m-400" });
    expect(error.message).toContain("HTTP 400");
    await sleep(600);
    expect(backend.requests.filter((r) => r.headers["webhook-id"] === "m-400")).toHaveLength(1);
    expect(acked(client, "m-400")).toBe(false);
    client.close();
  });

  it("refuses, finally, a message_id no HTTP header can carry (it is the webhook-id), without a hand-off", async () => {
    backend.answer = (_req, res) => res.writeHead(200).end();
    const client = await connect(gw, "odd-ids");
    const before = backend.requests.length;
    for (const id of ["line\nbreak", "ü-umlaut", "with space", "\u0000nul"]) {
      client.send(chat(id));
      expect(await errorFor(client, id)).toMatchObject({ code: "MESSAGE_REJECTED", fatal: false, message_id: id });
    }
    expect(backend.requests.length).toBe(before);
    await stillServes(client);
    client.close();
  });

  it("never puts the webhook URL (which may carry a token) or the secret in a frame or a log line", async () => {
    backend.answer = (_req, res) => res.writeHead(502).end();
    const client = await connect(gw, "leaks");
    client.send(chat("m-leak"));
    await errorFor(client, "m-leak");
    const everything = JSON.stringify(client.frames) + gw.logs.text;
    expect(everything).toContain("agent_handoff");
    for (const secret of ["s3cr3t-in-url", "/hook", TEST_WEBHOOK_SECRET, TEST_WEBHOOK_SECRET.slice(6)]) expect(everything).not.toContain(secret);
    client.close();
  });
});

describe("backends that are not there", () => {
  it("answers AGENT_UNAVAILABLE when nothing listens at the URL, and when the peer does not speak HTTP", async () => {
    // (resume(): read what the gateway sends, so the socket sees the gateway's close and the server can close.)
    const garbage: TcpServer = createTcpServer((socket) => socket.resume().end("SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP\r\n\r\n"));
    await new Promise<void>((resolve) => garbage.listen(0, "127.0.0.1", () => resolve()));
    const closed = createTcpServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", () => resolve()));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    for (const url of [`http://127.0.0.1:${closedPort}/hook`, `http://127.0.0.1:${(garbage.address() as AddressInfo).port}/hook`]) {
      const gw = await startGateway({ env: { REDIS_URL: redis.url, AGENT_WEBHOOK_URL: url, AGENT_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, AGENT_WEBHOOK_TIMEOUT_MS: "1000" } });
      try {
        const client = await connect(gw, "nobody-home");
        client.send(chat("m-gone"));
        expect(await errorFor(client, "m-gone")).toMatchObject({ code: "AGENT_UNAVAILABLE", fatal: false, message_id: "m-gone" });
        await stillServes(client);
        client.close();
      } finally {
        await gw.close();
      }
    }
    await new Promise<void>((resolve) => garbage.close(() => resolve()));
  });

  it("answers CHAT_UNAVAILABLE without AGENT_WEBHOOK_URL, and still serves agent events", async () => {
    const gw = await startGateway({ env: { REDIS_URL: redis.url } });
    try {
      const client = await connect(gw, "no-agent");
      client.send(chat("m-none"));
      const error = await errorFor(client, "m-none");
      expect(error).toMatchObject({ code: "CHAT_UNAVAILABLE", fatal: false, message_id: "m-none" });
      expect(JSON.stringify(error)).not.toMatch(/http/i);
      await stillServes(client);
      client.close();
    } finally {
      await gw.close();
    }
  });
});

describe("in-flight bounds", () => {
  it("answers RATE_LIMITED (non-fatal) beyond the per-user and per-instance bounds, and accepts again once they drain", async () => {
    const backend = await fakeBackend();
    const held: ServerResponse[] = [];
    backend.answer = (_req, res) => void held.push(res);
    const gw = await startGateway({
      env: {
        REDIS_URL: redis.url,
        AGENT_WEBHOOK_URL: backend.url,
        AGENT_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
        AGENT_WEBHOOK_MAX_IN_FLIGHT: "3",
        AGENT_WEBHOOK_MAX_IN_FLIGHT_PER_USER: "2",
      },
    });
    try {
      const alice = await connect(gw, "bound-alice");
      const bob = await connect(gw, "bound-bob");
      for (const id of ["a1", "a2", "a3"]) alice.send(chat(id));
      expect(await errorFor(alice, "a3")).toMatchObject({ code: "RATE_LIMITED", fatal: false, message_id: "a3" });
      await waitUntil(() => held.length === 2);
      bob.send(chat("b1"));
      await waitUntil(() => held.length === 3);
      bob.send(chat("b2"));
      expect(await errorFor(bob, "b2")).toMatchObject({ code: "RATE_LIMITED", fatal: false, message_id: "b2" });
      await stillServes(alice);

      for (const res of held.splice(0)) res.writeHead(200).end();
      backend.answer = (_req, res) => res.writeHead(200).end();
      await Promise.all(["a1", "a2"].map((id) => alice.waitFor((f) => f.type === "ack" && f.message_id === id)));
      await bob.waitFor((f) => f.type === "ack" && f.message_id === "b1");
      alice.send(chat("a3"));
      await alice.waitFor((f) => f.type === "ack" && f.message_id === "a3");
      alice.close();
      bob.close();
    } finally {
      for (const res of held) res.destroy();
      await gw.close();
      await backend.close();
    }
  });
});

async function waitUntil(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(10);
  }
}
