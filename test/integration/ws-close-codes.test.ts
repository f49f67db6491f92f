import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMemoryStore } from "../../service/src/plugins/store/memory.js";
import type { Store } from "../../service/src/plugins/store/types.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import {
  mintToken,
  ORIGIN,
  publishEvent,
  requestTicket,
  startGateway,
  TestClient,
  ticketFor,
  TEST_SERVICE_SECRET,
  type TestGateway,
} from "../support/gateway.js";

// Every row of the close-code table (docs/protocol.md §3), each said the
// contract's way: one fatal error frame naming the code, then the close with
// the code's name as the reason.
let redis: RedisServerHandle;
let gw: TestGateway;
beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url, MAX_CONNECTIONS_PER_USER: "2", MAX_MESSAGE_BYTES: "1024", MAX_FRAMES_PER_SECOND: "20" } });
});
afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

async function expectClose(client: TestClient, code: number, reason: string, retry: boolean) {
  const closed = await client.closed;
  expect({ code: closed.code, reason: closed.reason }).toEqual({ code, reason });
  const errors = client.frames.filter((f) => f.type === "error" && f.fatal === true);
  expect(errors).toEqual([expect.objectContaining({ code: reason, retry, message: expect.any(String) })]);
}

describe("4400: no ticket, or not a ticket's shape", () => {
  it("closes a connection without a ticket with 4400 TICKET_MISSING", async () => {
    await expectClose(new TestClient(`${gw.wsUrl}/ws`), 4400, "TICKET_MISSING", true);
  });
  it("closes a connection with a garbage ticket with 4400 TICKET_MALFORMED", async () => {
    await expectClose(new TestClient(`${gw.wsUrl}/ws?ticket=not-a-ticket`), 4400, "TICKET_MALFORMED", true);
  });
  it("closes a connection with two ticket parameters with 4400 TICKET_MALFORMED", async () => {
    const t = await ticketFor(gw);
    await expectClose(new TestClient(`${gw.wsUrl}/ws?ticket=${t}&ticket=${t}`), 4400, "TICKET_MALFORMED", true);
  });
});

describe("4401: not redeemable", () => {
  it("rejects a ticket that was never issued with 4401 TICKET_INVALID", async () => {
    const forged = `${"A".repeat(43)}.${(Date.now() + 30_000).toString(36)}`;
    await expectClose(new TestClient(`${gw.wsUrl}/ws?ticket=${forged}`), 4401, "TICKET_INVALID", true);
  });
  it("rejects a ticket redeemed twice with 4401 TICKET_USED", async () => {
    const ticket = await ticketFor(gw, "reuse-user");
    const first = await TestClient.connect(gw, ticket);
    await first.waitForType("connection_established");
    await expectClose(new TestClient(`${gw.wsUrl}/ws?ticket=${ticket}`), 4401, "TICKET_USED", true);
    first.close();
  });
  it("rejects a ticket used after its TTL with 4401 TICKET_EXPIRED", async () => {
    const short = await startGateway({ env: { REDIS_URL: redis.url, TICKET_TTL_SECONDS: "1" } });
    try {
      const ticket = await ticketFor(short, "slow-user");
      await new Promise((r) => setTimeout(r, 1100));
      await expectClose(new TestClient(`${short.wsUrl}/ws?ticket=${ticket}`), 4401, "TICKET_EXPIRED", true);
    } finally {
      await short.close();
    }
  });
});

describe("4408: the session ends with the user token", () => {
  it("warns with session_expiring, then closes with 4408 SESSION_EXPIRED at the token's exp", async () => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const { body } = await requestTicket(gw, await mintToken({ sub: "short-session", exp }));
    const client = await TestClient.connect(gw, body.ticket as string);
    const warning = await client.waitForType("session_expiring");
    expect(warning.session_expires_at).toBe(new Date(exp * 1000).toISOString());
    expect(warning.in_ms).toBeLessThanOrEqual(2000);
    await expectClose(client, 4408, "SESSION_EXPIRED", true);
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000);
  });
});

describe("4429: over a limit", () => {
  it("refuses a third connection of a user when MAX_CONNECTIONS_PER_USER is 2 with 4429 TOO_MANY_CONNECTIONS", async () => {
    const a = await TestClient.connect(gw, await ticketFor(gw, "busy-user"));
    const b = await TestClient.connect(gw, await ticketFor(gw, "busy-user"));
    await Promise.all([a.waitForType("connection_established"), b.waitForType("connection_established")]);
    await expectClose(await TestClient.connect(gw, await ticketFor(gw, "busy-user")), 4429, "TOO_MANY_CONNECTIONS", true);
    a.close();
    await a.closed;
    // A closed connection frees its place.
    await new Promise((r) => setTimeout(r, 50));
    const c = await TestClient.connect(gw, await ticketFor(gw, "busy-user"));
    await c.waitForType("connection_established");
    b.close();
    c.close();
  });

  it("closes a socket that floods frames with 4429 RATE_LIMITED", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "flooder"));
    await client.waitForType("connection_established");
    for (let i = 0; i < 200; i++) client.send({ type: "ping", id: i });
    await expectClose(client, 4429, "RATE_LIMITED", true);
  });

  it("closes a flood of bad frames with 4429 RATE_LIMITED sooner than good ones", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "bad-flooder"));
    await client.waitForType("connection_established");
    for (let i = 0; i < 10; i++) client.send("{not json");
    await expectClose(client, 4429, "RATE_LIMITED", true);
    expect(client.frames.filter((f) => f.code === "MESSAGE_MALFORMED").length).toBeGreaterThan(0);
  });

  it("cuts a client that does not read with 4429 SLOW_CONSUMER", async () => {
    const slow = await startGateway({ env: { REDIS_URL: redis.url, MAX_SEND_BUFFER_BYTES: String(64 * 1024) } });
    try {
      const client = await TestClient.connect(slow, await ticketFor(slow, "slow-reader"));
      await client.waitForType("connection_established");
      // Stop reading: the kernel buffers fill, then the gateway's send buffer grows.
      (client.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
      // Loopback's kernel buffers hold several MiB before the gateway's own buffer grows.
      const blob = "x".repeat(60 * 1024);
      const cut = () => [...slow.app.websocketServer.clients].every((ws) => ws.readyState !== ws.OPEN);
      for (let i = 0; i < 1000 && !cut(); i++) await publishEvent(slow, "slow-reader", { data: { blob } });
      expect(cut()).toBe(true);
      (client.socket as unknown as { _socket: { resume(): void } })._socket.resume();
      await expectClose(client, 4429, "SLOW_CONSUMER", true);
    } finally {
      await slow.close();
    }
  });
});

describe("4013: the store cannot be reached to redeem", () => {
  it("closes with 4013 TICKET_STORE_UNAVAILABLE within about a second while Redis does not answer", async () => {
    const ticket = await ticketFor(gw, "outage-user");
    redis.pause();
    try {
      const started = Date.now();
      await expectClose(new TestClient(`${gw.wsUrl}/ws?ticket=${ticket}`), 4013, "TICKET_STORE_UNAVAILABLE", true);
      expect(Date.now() - started).toBeLessThan(2500);
    } finally {
      redis.resume();
    }
  });
});

describe("4500: origin", () => {
  it("closes a connection from an origin not in ALLOWED_ORIGINS with 4500 ORIGIN_FORBIDDEN, retry false", async () => {
    const ticket = await ticketFor(gw, "origin-user");
    await expectClose(new TestClient(`${gw.wsUrl}/ws?ticket=${ticket}`, { origin: "https://evil.example" }), 4500, "ORIGIN_FORBIDDEN", false);
  });
  it("closes a connection whose origin is not the one the ticket was issued to with 4500", async () => {
    const ticket = await ticketFor(gw, "origin-user", ORIGIN);
    const client = new TestClient(`${gw.wsUrl}/ws?ticket=${ticket}`, { headers: {} , origin: undefined });
    await expectClose(client, 4500, "ORIGIN_FORBIDDEN", false);
  });
});

describe("4501: revoked", () => {
  it("closes the user's sockets with 4501 SESSION_REVOKED on revoke, retry false", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "revoked-user"));
    await client.waitForType("connection_established");
    const res = await fetch(`${gw.url}/internal/v1/users/revoked-user/revoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "test" },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ closed: 1 });
    await expectClose(client, 4501, "SESSION_REVOKED", false);
  });
});

describe("4012: restart and age", () => {
  it("closes a connection at MAX_CONNECTION_AGE_SECONDS with 4012 CONNECTION_AGE", async () => {
    const aged = await startGateway({ env: { REDIS_URL: redis.url, MAX_CONNECTION_AGE_SECONDS: "1" } });
    try {
      const client = await TestClient.connect(aged, await ticketFor(aged, "old-user"));
      await client.waitForType("connection_established");
      const started = Date.now();
      await expectClose(client, 4012, "CONNECTION_AGE", true);
      expect(Date.now() - started).toBeGreaterThan(700);
    } finally {
      await aged.close();
    }
  });
  it("closes every socket with 4012 SERVICE_RESTART when the app closes", async () => {
    const other = await startGateway({ env: { REDIS_URL: redis.url } });
    const client = await TestClient.connect(other, await ticketFor(other, "restart-user"));
    await client.waitForType("connection_established");
    await other.close();
    await expectClose(client, 4012, "SERVICE_RESTART", true);
  });
});

describe("1009 and 1003: client bugs", () => {
  it("closes on a frame over MAX_MESSAGE_BYTES with 1009 MESSAGE_TOO_BIG, retry false", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "big-user"));
    await client.waitForType("connection_established");
    client.send({ type: "ping", id: "x".repeat(2000) });
    await expectClose(client, 1009, "MESSAGE_TOO_BIG", false);
  });
  it("closes on a binary frame with 1003 UNSUPPORTED_DATA, retry false", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "binary-user"));
    await client.waitForType("connection_established");
    client.socket.send(Buffer.from([1, 2, 3]), { binary: true });
    await expectClose(client, 1003, "UNSUPPORTED_DATA", false);
  });
});

describe("1011: unexpected faults", () => {
  it("turns an unexpected store fault into 1011 INTERNAL_ERROR and logs it", async () => {
    const memory = createMemoryStore();
    // admit: the one store call of a connect (it reads the head among the rest).
    const faulty: Store = { ...memory, admit: async () => Promise.reject(new TypeError("boom")) } as Store;
    const broken = await startGateway({ store: faulty });
    try {
      await expectClose(await TestClient.connect(broken, await ticketFor(broken, "unlucky")), 1011, "INTERNAL_ERROR", true);
      expect(broken.logs.records.some((r) => r.event === "ws_internal_error" && r.severity === "ERROR")).toBe(true);
    } finally {
      await broken.close();
      await memory.close();
    }
  });
});

describe("bookkeeping", () => {
  it("counts closes by code and auth outcomes by reason in the metrics", async () => {
    const text = await gw.app.metrics.registry.metrics();
    expect(text).toMatch(/gateway_ws_closes_total\{code="4400",closed_by="server"\} \d+/);
    expect(text).toMatch(/gateway_ws_auth_total\{outcome="rejected",reason="TICKET_USED"\} 1/);
    expect(text).toMatch(/gateway_ws_auth_total\{outcome="accepted",reason="OK"\} \d+/);
    expect(text).toMatch(/gateway_ticket_redeem_seconds_count \d+/);
  });
});

describe("protocol-level floods", () => {
  it("closes a flood of protocol pings with 4429 RATE_LIMITED (pings are frames too), not a bare drop", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "ping-flooder"));
    await client.waitForType("connection_established");
    // Stop reading, as a flooder does: ws alone would drop the peer at 60 unsent pongs, with no close frame.
    (client.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    for (let i = 0; i < 200; i++) client.socket.ping();
    await new Promise((r) => setTimeout(r, 200));
    (client.socket as unknown as { _socket: { resume(): void } })._socket.resume();
    await expectClose(client, 4429, "RATE_LIMITED", true);
  });
});

describe("guessing tickets", () => {
  it("closes redemption attempts past TICKET_RATE_PER_IP a minute with 4429 RATE_LIMITED, even for a valid ticket", async () => {
    // Its own store: the counter is per client address, and this file's other tests connect from the same one.
    const own = createMemoryStore();
    const strict = await startGateway({ store: own, env: { TICKET_RATE_PER_IP: "5" } });
    try {
      const guesses = Array.from({ length: 5 }, () => new TestClient(`${strict.wsUrl}/ws?ticket=${"B".repeat(43)}.${(Date.now() + 30_000).toString(36)}`));
      expect((await Promise.all(guesses.map((g) => g.closed))).map((c) => c.reason)).toEqual(Array(5).fill("TICKET_INVALID"));
      // The sixth attempt from this address is refused, and a real ticket would be burned rather than let in.
      await expectClose(new TestClient(`${strict.wsUrl}/ws?ticket=${await ticketFor(strict, "guesser")}`), 4429, "RATE_LIMITED", true);
    } finally {
      await strict.close();
      await own.close();
    }
  });
});
