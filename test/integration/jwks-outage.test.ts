/**
 * docs/protocol.md §8.5 against a real gateway, redis-server and a local JWKS
 * endpoint that is taken away: the ticket endpoint answers 503
 * AUTH_UNAVAILABLE with Retry-After (never a 401) when no key can be had,
 * refresh_session gets a non-fatal AUTH_UNAVAILABLE and the session goes on,
 * and the SDK waits and retries with the token it has instead of asking the
 * app for a new one.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { buildApp } from "../../service/src/app.js";
import { createLogger } from "../../service/src/logger.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { LogCapture, requestTicket, TestClient, testConfig, type TestGateway } from "../support/gateway.js";
import { JwksServer, signingKey, signWith, type SigningKey } from "../support/jwks-server.js";
import { clientFor, opened, sentOfType, type ClientUnderTest } from "./client-harness.js";
import { until } from "../support/wait.js";

let redis: RedisServerHandle;
const jwks = new JwksServer();
let current: SigningKey;
let next: SigningKey;
const gateways: TestGateway[] = [];
const live: ClientUnderTest[] = [];

/**
 * A gateway that trusts only the JWKS (no HS256 key), as one behind an auth
 * service would. `cooldownMs: 0` lets a new kid trigger a fetch at once
 * (production waits 30 s after a good fetch), so a test need not sleep.
 */
async function gateway(options: { cooldownMs?: number } = {}): Promise<TestGateway> {
  const config = testConfig({ REDIS_URL: redis.url, AUTH_JWKS_URL: jwks.url, JWT_SECRET_KEY: "", JWT_SECRET_KEY_PREVIOUS: "", TICKET_RATE_PER_USER: "1000" });
  const logs = new LogCapture();
  const app = await buildApp({
    config,
    logger: createLogger({ level: "debug", destination: logs }),
    metricsPort: null,
    keySet: options.cooldownMs === undefined ? undefined : { policy: { cooldownMs: options.cooldownMs } },
  });
  const url = await app.listen({ port: 0, host: "127.0.0.1" });
  const gw = { app, config, url, wsUrl: url.replace(/^http/, "ws"), logs, close: () => app.close() };
  gateways.push(gw);
  return gw;
}

async function ticketStatus(gw: TestGateway, token: string): Promise<number> {
  return (await requestTicket(gw, token)).status;
}

beforeAll(async () => {
  redis = await startRedis();
  current = await signingKey("auth-key-1");
  next = await signingKey("auth-key-2");
  await jwks.start();
});
beforeEach(() => {
  jwks.mode = "up";
  jwks.keys = [current.jwk];
});
afterEach(async () => {
  for (const c of live.splice(0)) c.client.close();
  await Promise.all(gateways.splice(0).map((g) => g.close()));
});
afterAll(async () => {
  await jwks.stop();
  await redis?.stop();
});

describe("the ticket endpoint during a JWKS outage", () => {
  it("an instance started during the outage answers 503 AUTH_UNAVAILABLE with Retry-After, not 401; the same token gets 201 once the endpoint is back", async () => {
    jwks.mode = "reset";
    const gw = await gateway();
    const token = await signWith(current, "cold-1");
    const refused = await requestTicket(gw, token);
    expect(refused.status).toBe(503);
    expect(refused.body).toEqual({ error: { code: "AUTH_UNAVAILABLE", message: expect.any(String) } });
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(refused.headers.get("www-authenticate")).toBeNull();
    await until("the state logged", () => gw.logs.records.find((r) => r.event === "jwks_state" && r.state === "unavailable"));

    jwks.mode = "up";
    const back = Date.now();
    let status = 0;
    while (status !== 201 && Date.now() - back < 8000) {
      status = await ticketStatus(gw, token);
      if (status !== 201) {
        expect(status).toBe(503);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(status).toBe(201);
    expect(gw.logs.records.some((r) => r.event === "jwks_state" && r.state === "ok")).toBe(true);
    // No log line carries the token.
    expect(gw.logs.text).not.toContain(token);
  });

  it("an instance that holds the key set keeps issuing tickets through the outage", async () => {
    const gw = await gateway();
    await gw.app.verifier.warm();
    jwks.mode = "reset";
    for (let i = 0; i < 10; i++) expect(await ticketStatus(gw, await signWith(current, `warm-${i}`))).toBe(201);
  });

  it("a token of the auth service's new key during the outage: 503 (it may be real, the set cannot be checked), then 201 once the set can be fetched", async () => {
    const gw = await gateway({ cooldownMs: 0 });
    await gw.app.verifier.warm();
    jwks.keys = [current.jwk, next.jwk];
    jwks.mode = "reset";
    const rotated = await signWith(next, "rotated-1");
    const refused = await requestTicket(gw, rotated);
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ error: { code: "AUTH_UNAVAILABLE" } });
    expect(await ticketStatus(gw, await signWith(current, "old-key"))).toBe(201); // the old key still works
    jwks.mode = "up";
    await new Promise((r) => setTimeout(r, 2100)); // the retry period after a failed fetch
    expect(await ticketStatus(gw, rotated)).toBe(201);
  });

  it("a key the endpoint does not publish is 401 TOKEN_INVALID when the endpoint answers", async () => {
    const gw = await gateway({ cooldownMs: 0 });
    const stranger = await signingKey("not-published");
    const refused = await requestTicket(gw, await signWith(stranger, "stranger"));
    expect(refused.status).toBe(401);
    expect(refused.body).toMatchObject({ error: { code: "TOKEN_INVALID" } });
  });
});

describe("refresh_session during a JWKS outage", () => {
  it("gets a non-fatal AUTH_UNAVAILABLE with retry_after; the session goes on, and the same token refreshes it once the endpoint is back", async () => {
    const gw = await gateway({ cooldownMs: 0 });
    const ticket = await requestTicket(gw, await signWith(current, "refresh-1"));
    expect(ticket.status).toBe(201);
    const client = await TestClient.connect(gw, ticket.body.ticket as string);
    await client.waitForType("connection_established");

    jwks.keys = [current.jwk, next.jwk];
    jwks.mode = "reset";
    const token = await signWith(next, "refresh-1");
    let from = client.frames.length;
    client.send({ type: "refresh_session", token });
    const refused = await client.waitFor((f) => f.type === "error" || f.type === "session_refreshed", { from });
    expect(refused).toEqual({ type: "error", code: "AUTH_UNAVAILABLE", message: expect.any(String), fatal: false, retry_after: expect.any(Number) });
    expect(refused.retry_after as number).toBeGreaterThanOrEqual(1);

    jwks.mode = "up";
    await new Promise((r) => setTimeout(r, (refused.retry_after as number) * 1000 + 100));
    from = client.frames.length;
    client.send({ type: "refresh_session", token });
    expect(await client.waitFor((f) => f.type === "error" || f.type === "session_refreshed", { from })).toMatchObject({ type: "session_refreshed" });
    expect(client.socket.readyState).toBe(client.socket.OPEN);
    client.close();
  });
});

describe("the SDK during a JWKS outage", () => {
  it("backs off on 503 AUTH_UNAVAILABLE, honouring Retry-After, and never asks the app for a new token", async () => {
    jwks.mode = "reset";
    const gw = await gateway();
    const c = clientFor(gw, "sdk-1", { getToken: () => signWith(current, "sdk-1"), backoff: { baseMs: 50, maxMs: 200 } });
    live.push(c);
    await until("three refusals", () => c.tickets.filter((t) => t.status === 503).length >= 3, 15_000);
    jwks.mode = "up";
    await opened(c, 1, 10_000);

    const refusals = c.tickets.filter((t) => t.status === 503);
    for (let i = 1; i < c.tickets.length; i++) {
      const previous = c.tickets[i - 1]!;
      if (previous.status === 503) expect(c.tickets[i]!.at - previous.at).toBeGreaterThanOrEqual(Number(previous.retryAfter) * 1000 - 50);
    }
    expect(refusals.every((t) => Number(t.retryAfter) >= 1)).toBe(true);
    expect(c.tokenRequests.every((r) => !r.forceRefresh)).toBe(true);
    expect(c.rec.errors.filter((e) => e.code === "AUTH_UNAVAILABLE").length).toBeGreaterThanOrEqual(3);
    expect(c.rec.states.find((s) => s.errorCode === "AUTH_UNAVAILABLE")?.reason).toBe("sign-in keys unreachable, retrying…");
  });

  it("on a refresh_session answered AUTH_UNAVAILABLE, tries again after retry_after with the app's current token, not a forced new one", async () => {
    const gw = await gateway({ cooldownMs: 0 });
    await gw.app.verifier.warm(); // holds the current key only
    // The endpoint goes away, and the auth service meanwhile signs renewed tokens with its next key.
    jwks.mode = "reset";
    jwks.keys = [current.jwk, next.jwk];
    let renewed: string | undefined;
    const received: Array<Record<string, unknown>> = [];
    const c = clientFor(gw, "sdk-2", {
      hooks: { incoming: (data) => (received.push(JSON.parse(data) as Record<string, unknown>), "pass") },
      // The first token ends in 20 s, so the gateway warns at once (60 s ahead); the renewed one is of a key the gateway
      // has not fetched yet.
      getToken: async ({ forceRefresh }) => {
        if (forceRefresh) renewed = await signWith(next, "sdk-2", 3600);
        return renewed ?? signWith(current, "sdk-2", 20);
      },
    });
    live.push(c);
    await opened(c);
    await until("the refusal", () => c.rec.errors.find((e) => e.code === "AUTH_UNAVAILABLE"), 8000);
    jwks.mode = "up";
    await until("a second refresh_session", () => sentOfType(c, "refresh_session").length >= 2, 8000);
    await until("refreshed", () => received.some((f) => f.type === "session_refreshed"), 8000);
    expect(c.tokenRequests).toEqual([{ forceRefresh: false }, { forceRefresh: true }, { forceRefresh: false }]);
    expect(c.rec.opens).toBe(1);
  });
});
