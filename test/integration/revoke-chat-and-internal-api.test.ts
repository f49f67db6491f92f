import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { publishEvent, startGateway, TestClient, TEST_SERVICE_SECRET, ticketFor, type TestGateway } from "../support/gateway.js";

let redis: RedisServerHandle;
let gws: TestGateway[];
beforeAll(async () => {
  redis = await startRedis();
  gws = await Promise.all([0, 1, 2].map(() => startGateway({ env: { REDIS_URL: redis.url, MAX_SEND_BUFFER_BYTES: String(64 * 1024) } })));
});
afterAll(async () => {
  await Promise.all(gws.map((g) => g.close()));
  await redis?.stop();
});

async function connect(gw: TestGateway, user: string) {
  const client = await TestClient.connect(gw, await ticketFor(gw, user));
  await client.waitForType("connection_established");
  return client;
}

function internal(gw: TestGateway, path: string, init: { headers?: Record<string, string>; body?: string } = {}) {
  return fetch(`${gw.url}/internal/v1${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "agent-backend", "content-type": "application/json", ...init.headers },
    body: init.body ?? "{}",
  });
}

describe("revoke", () => {
  it("closes the user's sockets on all three instances with 4501 and counts them", async () => {
    const clients = await Promise.all([...gws, gws[0]!].map((g) => connect(g, "mallory")));
    const bystander = await connect(gws[1]!, "not-mallory");
    const res = await internal(gws[2]!, "/users/mallory/revoke");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ closed: 4 });
    const closes = await Promise.all(clients.map((c) => c.closed));
    expect(closes.every((c) => c.code === 4501 && c.reason === "SESSION_REVOKED")).toBe(true);
    expect(bystander.socket.readyState).toBe(bystander.socket.OPEN);
    bystander.close();
  });

  it("voids the user's unredeemed tickets", async () => {
    const ticket = await ticketFor(gws[0]!, "revoked-with-ticket");
    expect((await internal(gws[1]!, "/users/revoked-with-ticket/revoke")).status).toBe(200);
    const client = new TestClient(`${gws[2]!.wsUrl}/ws?ticket=${ticket}`);
    const closed = await client.closed;
    expect(closed).toEqual({ code: 4501, reason: "SESSION_REVOKED" });
    // A token issued after the revoke gets a ticket that works (iat has one-second
    // precision: the next second is after it); older tokens get 401 TOKEN_REVOKED.
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 20));
    const later = await connect(gws[2]!, "revoked-with-ticket");
    later.close();
  });

  it("answers 0 for a user with no sockets", async () => {
    expect(await (await internal(gws[0]!, "/users/nobody/revoke")).json()).toEqual({ closed: 0 });
  });
});

describe("slow consumers", () => {
  it("cuts a client that stops reading with 4429 SLOW_CONSUMER; it resumes elsewhere without loss", async () => {
    const client = await connect(gws[0]!, "slowpoke");
    (client.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const blob = "y".repeat(60 * 1024);
    let published = 0;
    const cut = () => [...gws[0]!.app.websocketServer.clients].every((ws) => ws.readyState !== ws.OPEN);
    while (!cut() && published < 1000) {
      await publishEvent(gws[1]!, "slowpoke", { data: { blob } });
      published++;
    }
    (client.socket as unknown as { _socket: { resume(): void } })._socket.resume();
    expect(await client.closed).toEqual({ code: 4429, reason: "SLOW_CONSUMER" });
    const had = client.seqs;
    expect(had).toEqual(Array.from({ length: had.length }, (_, i) => i + 1));
    // The history keeps the last 1000 events, so the client can catch up.
    const again = await TestClient.connect(gws[2]!, await ticketFor(gws[2]!, "slowpoke"));
    await again.waitForType("connection_established");
    again.send({ type: "resume", last_seq: had.at(-1) ?? 0 });
    await again.waitForType("resume_complete", { timeoutMs: 15_000 });
    expect([...had, ...again.seqs]).toEqual(Array.from({ length: published }, (_, i) => i + 1));
    again.close();
  });
});

describe("the internal API", () => {
  it("publishes an event: 202 with its seq and event_id", async () => {
    const res = await internal(gws[0]!, "/users/api-user/events", { body: JSON.stringify({ type: "tool_executing", run_id: "r", thread_id: "t", data: { tool: "x" } }) });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ seq: 1, event_id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
  });

  const refusals: Array<[string, Record<string, string>]> = [
    ["no Authorization", { authorization: "" }],
    ["a wrong secret", { authorization: "Bearer wrong-secret" }],
    ["a secret that is a prefix of the right one", { authorization: `Bearer ${TEST_SERVICE_SECRET.slice(0, -1)}` }],
    ["no X-Service-Id", { "x-service-id": "" }],
  ];
  for (const [name, headers] of refusals) {
    it(`refuses ${name} with 401 and logs it without the secret`, async () => {
      const res = await internal(gws[0]!, "/users/api-user/events", { headers, body: JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t" }) });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("SERVICE_UNAUTHORIZED");
      expect(gws[0]!.logs.records.some((r) => r.event === "internal_auth_failed")).toBe(true);
      expect(gws[0]!.logs.text).not.toContain(TEST_SERVICE_SECRET.slice(0, 20));
    });
  }

  const invalid: Array<[string, string, number]> = [
    ["an unknown event type", JSON.stringify({ type: "agent_dancing", run_id: "r", thread_id: "t" }), 400],
    ["a missing run_id", JSON.stringify({ type: "agent_thinking", thread_id: "t" }), 400],
    ["an extra field", JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", seq: 5 }), 400],
    ["data that is not an object", JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", data: "text" }), 400],
    ["malformed JSON", "{nope", 400],
    ["data over 64 KiB", JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", data: { x: "z".repeat(70_000) } }), 413],
  ];
  for (const [name, body, status] of invalid) {
    it(`answers ${name} with ${status} and publishes nothing`, async () => {
      const res = await internal(gws[0]!, "/users/strict-user/events", { body });
      expect(res.status).toBe(status);
      const ok = await internal(gws[0]!, "/users/strict-user/events", { body: JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t" }) });
      const { seq } = (await ok.json()) as { seq: number };
      expect(seq).toBe(invalid.findIndex(([n]) => n === name) + 1);
    });
  }
});
