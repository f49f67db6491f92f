import { execFileSync } from "node:child_process";
import { Redis } from "ioredis";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisKeys } from "../../service/src/plugins/store/index.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import {
  mintToken,
  publishEvent,
  requestTicket,
  startGateway,
  TEST_JWT_KEY,
  TEST_SERVICE_SECRET,
  TestClient,
  ticketFor,
  type TestGateway,
} from "../support/gateway.js";

// Issue 13, items 8, 9 and 10, written as the attacks, against a real
// gateway on a real Redis.
let redis: RedisServerHandle;
let gw: TestGateway;
let admin: Redis;
beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url, MAX_FRAMES_PER_SECOND: "20" }, metrics: true });
  admin = new Redis(redis.url);
});
afterAll(async () => {
  admin?.disconnect();
  await gw?.close();
  await redis?.stop();
});

/** A real HS256 token with exactly these claims (mintToken always sets iat to now). */
function signed(claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(TEST_JWT_KEY));
}
const nowS = () => Math.floor(Date.now() / 1000);

function internal(path: string, body: unknown, serviceId = "agent-backend") {
  return fetch(`${gw.url}/internal/v1${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": serviceId, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function connected(user: string): Promise<TestClient> {
  const client = await TestClient.connect(gw, await ticketFor(gw, user));
  await client.waitForType("connection_established");
  return client;
}

describe("item 8: an exp beyond the JavaScript date range", () => {
  const farExp = 1e13; // seconds: 1e16 ms, past the last Date (8.64e15 ms)

  it("is refused at the ticket endpoint with 401 TOKEN_INVALID", async () => {
    const { status, body } = await requestTicket(gw, await signed({ sub: "far-future", exp: farExp, iat: nowS() }));
    expect(status).toBe(401);
    expect(body).toEqual({ error: { code: "TOKEN_INVALID", message: expect.any(String) } });
  });

  it("in refresh_session gets a non-fatal TOKEN_INVALID and the socket stays open (never 1011)", async () => {
    const client = await connected("far-refresher");
    client.send({ type: "refresh_session", token: await signed({ sub: "far-refresher", exp: farExp, iat: nowS() }) });
    expect(await client.waitForType("error")).toMatchObject({ code: "TOKEN_INVALID", fatal: false });
    client.send({ type: "ping", id: "still-there" });
    await client.waitFor((f) => f.type === "pong" && f.id === "still-there");
    client.close();
  });
});

describe("item 10: a revoke sticks to the tokens issued before it", () => {
  it("refuses the same JWT a new ticket after a revoke with 401 TOKEN_REVOKED; a token issued later works", async () => {
    const token = await mintToken({ sub: "stolen" });
    expect((await requestTicket(gw, token)).status).toBe(201);
    expect((await internal("/users/stolen/revoke", {})).status).toBe(200);
    const again = await requestTicket(gw, token);
    expect(again.status).toBe(401);
    expect(again.body).toEqual({ error: { code: "TOKEN_REVOKED", message: expect.any(String) } });
    expect(again.headers.get("www-authenticate")).toBe('Bearer error="invalid_token"');
    // iat has one-second precision: a token issued in the next second is after the revoke.
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 20));
    expect((await requestTicket(gw, await mintToken({ sub: "stolen" }))).status).toBe(201);
  });

  it("takes an explicit not_before: older tokens refused, newer ones and other users untouched", async () => {
    expect((await internal("/users/dated/revoke", { not_before: nowS() - 3600 })).status).toBe(200);
    expect((await requestTicket(gw, await signed({ sub: "dated", exp: nowS() + 600, iat: nowS() - 7200 }))).body).toMatchObject({ error: { code: "TOKEN_REVOKED" } });
    expect((await requestTicket(gw, await signed({ sub: "dated", exp: nowS() + 600, iat: nowS() - 60 }))).status).toBe(201);
    expect((await requestTicket(gw, await signed({ sub: "not-dated", exp: nowS() + 600, iat: nowS() - 7200 }))).status).toBe(201);
  });

  it("refuses a token without iat while a not_before is in force (fail closed)", async () => {
    expect((await internal("/users/no-iat/revoke", { not_before: nowS() - 3600 })).status).toBe(200);
    expect((await requestTicket(gw, await signed({ sub: "no-iat", exp: nowS() + 600 }))).status).toBe(401);
  });

  it("refuses a not_before in the future (milliseconds sent as seconds) with 400, and other fields too", async () => {
    const future = await internal("/users/typo/revoke", { not_before: Date.now() });
    expect(future.status).toBe(400);
    expect((await internal("/users/typo/revoke", { not_before: "yesterday" })).status).toBe(400);
    expect((await internal("/users/typo/revoke", { before: 1 })).status).toBe(400);
    expect((await requestTicket(gw, await mintToken({ sub: "typo" }))).status).toBe(201);
  });

  it("does not extend a session with a revoked token through refresh_session", async () => {
    const old = await signed({ sub: "refresh-revoked", exp: nowS() + 7200, iat: nowS() - 600 });
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 20));
    expect((await internal("/users/refresh-revoked/revoke", { not_before: nowS() - 300 })).status).toBe(200);
    const client = await connected("refresh-revoked");
    client.send({ type: "refresh_session", token: old });
    expect(await client.waitForType("error")).toMatchObject({ code: "TOKEN_INVALID", fatal: false });
    expect(client.frames.some((f) => f.type === "session_refreshed")).toBe(false);
    client.close();
  });
});

describe("item 9: the smaller holes", () => {
  it("counts unsolicited pongs against the frame budget: a pong flood is closed 4429 RATE_LIMITED", async () => {
    const client = await connected("ponger");
    for (let i = 0; i < 200 && client.socket.readyState === client.socket.OPEN; i++) client.socket.pong();
    expect(await client.closed).toEqual({ code: 4429, reason: "RATE_LIMITED" });
  });

  it("answers an event whose data nests 10,000 deep with 400, and keeps serving", async () => {
    const deep = `{"type":"agent_thinking","run_id":"r","thread_id":"t","data":${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}}`;
    const res = await fetch(`${gw.url}/internal/v1/users/deep/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "agent-backend", "content-type": "application/json" },
      body: deep,
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("BAD_REQUEST");
    expect((await publishEvent(gw, "deep", { data: { a: { b: { c: 1 } } } })).status).toBe(202);
  });

  it("reports a Redis command error (WRONGTYPE) as a 500 with its cause in the log, not as 'store unavailable'", async () => {
    await admin.hset(redisKeys.ticketRate("wrongtype"), "x", "1");
    const res = await requestTicket(gw, await mintToken({ sub: "wrongtype" }));
    expect(res.status).toBe(500);
    expect(res.body).toEqual({ error: { code: "INTERNAL_ERROR", message: expect.any(String) } });
    const line = gw.logs.records.findLast((r) => r.event === "http_internal_error");
    expect(JSON.stringify(line)).toContain("WRONGTYPE");
    expect(gw.logs.records.some((r) => r.event === "store_unavailable")).toBe(false);
  });

  it("fails closed on a revocation marker that is not a number", async () => {
    const ticket = await ticketFor(gw, "garbled");
    await admin.set(redisKeys.revoked("garbled"), "not-a-number");
    const client = new TestClient(`${gw.wsUrl}/ws?ticket=${ticket}`);
    expect(await client.closed).toEqual({ code: 4501, reason: "SESSION_REVOKED" });
  });

  it("counts every internal call under a bounded set of labels, and logs the X-Service-Id of refused ones", async () => {
    for (let i = 0; i < 30; i++) await publishEvent(gw, "svc-user").then(() => internal("/users/svc-user/events", { type: "agent_thinking", run_id: "r", thread_id: "t" }, `caller-${i}`));
    await fetch(`${gw.url}/internal/v1/users/x/events`, { method: "POST", headers: { "x-service-id": "stranger" } });
    const lines = gw.logs.records.filter((r) => r.event === "internal_request");
    // A refusal is logged at info; a success only at debug (the test gateway logs debug too).
    expect(lines.some((r) => r.service_id === "stranger" && r.status === 401 && r.severity === "INFO")).toBe(true);
    const successes = lines.filter((r) => r.status === 202);
    expect(successes.some((r) => r.service_id === "caller-29")).toBe(true);
    expect(successes.every((r) => r.severity === "DEBUG")).toBe(true);
    const text = await (await fetch(`http://127.0.0.1:${gw.app.metricsPort()}/metrics`)).text();
    const labels = new Set([...text.matchAll(/gateway_internal_requests_total\{service_id="([^"]+)"/g)].map((m) => m[1]));
    expect(labels).toContain("test-agent");
    expect(text).toMatch(/gateway_internal_requests_total\{service_id="caller-0",status="202"\} 1\b/);
    expect(labels).toContain("other");
    expect(labels).toContain("unauthenticated");
    expect(labels.has("stranger")).toBe(false);
    expect(labels.size).toBeLessThanOrEqual(20 + 3);
  });
});

describe("a starved event loop is not a store outage", () => {
  it("takes an answer that arrived while the process was stalled past the command timeout", async () => {
    const { createRedisStore } = await import("../../service/src/plugins/store/index.js");
    const store = createRedisStore({ url: redis.url, commandTimeoutMs: 300 });
    try {
      await store.hit("stall-warmup", 1000);
      const started = Date.now();
      const answer = store.hit("stall", 1000);
      await new Promise((r) => setImmediate(r)); // the command is written (ioredis sends on the next tick)
      // The process is stalled (no timer or socket callback can run) until Redis has
      // answered (the key exists, asked synchronously) and the timeout has passed.
      const port = new URL(redis.url).port;
      const key = redisKeys.rateLimit("stall");
      while (execFileSync("redis-cli", ["-p", port, "EXISTS", key]).toString().trim() !== "1" || Date.now() - started < 450) {
        /* stalled */
      }
      await expect(answer).resolves.toMatchObject({ count: 1 });
    } finally {
      await store.close();
    }
  });
});
