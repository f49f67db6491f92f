/**
 * The SDK's connection state machine against a real gateway and a real
 * redis-server: a new ticket for every attempt, the backoff schedule, the
 * close codes that stop it, the ticket endpoint's errors, and the network.
 */
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { GatewayClient } from "../../service/client/GatewayClient.js";
import type { NetworkWindow } from "../../service/client/types.js";
import { startRedis } from "../support/redis-server.js";
import { mintToken, ORIGIN, publishEvent, requestTicket, TestClient, ticketFor, TEST_SERVICE_SECRET } from "../support/gateway.js";
import { clientFor, gatewaySuite, opened, portOf, range, sentOfType, startGatewayOn } from "./client-harness.js";
import { sleep, until } from "../support/wait.js";

const suite = gatewaySuite({ TICKET_RATE_PER_USER: "1000", MAX_CONNECTIONS_PER_USER: "1" });

describe("connecting", () => {
  it("takes latest_seq as its baseline, then delivers live events; works with the plain `ws` WebSocket", async () => {
    await publishEvent(suite.gw, "base-1");
    await publishEvent(suite.gw, "base-1");
    const rec: number[] = [];
    const client = new GatewayClient({ url: suite.gw.url, getToken: () => mintToken({ sub: "base-1" }), WebSocket, window: null });
    client.on("event", (e) => rec.push(e.seq));
    client.connect();
    await until("open", () => client.state === "open");
    expect(client.lastSeq).toBe(2);
    await publishEvent(suite.gw, "base-1");
    await until("seq 3", () => rec.includes(3));
    expect(rec).toEqual([3]);
    client.close();
    expect(client.state).toBe("closed");
  });
});

describe("every attempt gets a new ticket", () => {
  it("and backs off exponentially with full jitter, capped, while the gateway refuses (4429)", async () => {
    // MAX_CONNECTIONS_PER_USER=1: while this socket holds the slot, every attempt is refused with 4429 TOO_MANY_CONNECTIONS.
    const holder = await TestClient.connect(suite.gw, await ticketFor(suite.gw, "busy-1"));
    await holder.waitForType("connection_established");
    const randoms = [0.999, 0.5, 0.999, 0.25, 0.999, 0.999];
    let i = 0;
    const c = suite.client("busy-1", {
      backoff: { baseMs: 20, maxMs: 100 },
      random: () => randoms[i++ % randoms.length]!,
    });
    await until("five refusals", () => c.rec.retryDelays.length >= 5);
    holder.close();
    await opened(c);

    // uniform in [0, min(100, 20·2^n)): the delay is floor(random · ceiling)
    expect(c.rec.retryDelays.slice(0, 5)).toEqual([19, 20, 79, 25, 99]);
    const refusals = c.rec.states.filter((s) => s.retryInMs !== undefined);
    expect(refusals.every((s) => s.code === 4429 && s.errorCode === "TOO_MANY_CONNECTIONS")).toBe(true);
    expect(refusals[0]!.reason).toBe("too many open connections, retrying later…");

    // one ticket request per socket, each ticket used once
    const tickets = c.sockets.urls.map((u) => new URL(u).searchParams.get("ticket"));
    expect(c.tickets.filter((t) => t.status === 201)).toHaveLength(c.sockets.urls.length);
    expect(new Set(tickets).size).toBe(tickets.length);
    expect(c.tokenRequests.length).toBe(c.sockets.urls.length);
  });

  it("and after the ticket expired before use (4401), renews it and connects", async () => {
    const shortTtl = await startGatewayOn(0, { REDIS_URL: suite.redis.url, TICKET_TTL_SECONDS: "1" });
    try {
      let first = true;
      const c = suite.track(
        clientFor(shortTtl, "slow-1", {
          backoff: { baseMs: 50, maxMs: 100 },
          // The first ticket arrives, then the socket opens only after it expired (a stalled network, a frozen tab).
          fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
            const response = await fetch(input, init);
            if (first) {
              first = false;
              await sleep(1300);
            }
            return response;
          }) as typeof fetch,
        }),
      );
      await opened(c, 1, 8000);
      const refused = c.rec.states.find((s) => s.code === 4401);
      expect(refused?.errorCode).toBe("TICKET_EXPIRED");
      expect(refused?.reason).toBe("ticket expired, renewing…");
      expect(c.sockets.urls).toHaveLength(2);
      expect(new URL(c.sockets.urls[0]!).searchParams.get("ticket")).not.toBe(new URL(c.sockets.urls[1]!).searchParams.get("ticket"));
    } finally {
      await shortTtl.close();
    }
  });
});

describe("4012: the instance restarts", () => {
  it("reconnects at once with a small jitter, resumes, and loses nothing", async () => {
    const first = await startGatewayOn(0, { REDIS_URL: suite.redis.url });
    const c = suite.track(clientFor(first, "restart-1", { random: () => 0.5, backoff: { reconnectNowMaxMs: 300, baseMs: 50, maxMs: 200 } }));
    await opened(c);
    const before = await publishEvent(first, "restart-1");
    await until("seq before", () => c.rec.seqs.includes(before.body.seq as number));

    const firstPort = portOf(first);
    await first.close();
    // Published while no instance is up: only a resume can bring it.
    const replacement = await startGatewayOn(firstPort, { REDIS_URL: suite.redis.url });
    try {
      const during = await publishEvent(replacement, "restart-1");
      await opened(c, 2, 8000);
      const after = await publishEvent(replacement, "restart-1");
      await until("seq after", () => c.rec.seqs.includes(after.body.seq as number));

      const drop = c.rec.states.find((s) => s.code === 4012)!;
      expect(drop.errorCode).toBe("SERVICE_RESTART");
      expect(drop.retryInMs).toBe(150); // 0.5 · reconnectNowMaxMs, no exponential backoff
      expect(c.rec.seqs).toEqual(range(before.body.seq as number, after.body.seq as number));
      expect(c.rec.seqs).toContain(during.body.seq);
    } finally {
      await replacement.close();
    }
  });
});

describe("the error frame decides, not the close code (WebKit may report a server close as 1006)", () => {
  const asWebKitDrop = () => ({ close: () => ({ code: 1006, reason: "" }) });

  it("a fatal SESSION_REVOKED frame followed by 1006: stops, and opens no other socket", async () => {
    const c = suite.client("frame-first-1", { hooks: asWebKitDrop(), backoff: { baseMs: 20, maxMs: 50 } });
    await opened(c);
    await fetch(`${suite.gw.url}/internal/v1/users/frame-first-1/revoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "test" },
    });
    await until("closed", () => c.client.state === "closed");
    expect(c.rec.states.at(-1)).toMatchObject({ state: "closed", errorCode: "SESSION_REVOKED", code: 1006 });
    expect(c.pendingTimers()).toBe(0); // nothing scheduled: no reconnect can follow
    expect(c.sockets.urls).toHaveLength(1);
  });

  it("a fatal frame with a code this SDK does not know and retry: false, followed by 1006: stops (a newer gateway's refusal)", async () => {
    const c = suite.client("frame-first-3", {
      backoff: { baseMs: 20, maxMs: 50 },
      hooks: {
        ...asWebKitDrop(),
        // The revoke's frame, renamed as a later contract might name a new refusal.
        incoming: (data, socket) => {
          if (!data.includes('"SESSION_REVOKED"')) return "pass";
          socket.onmessage?.({ data: JSON.stringify({ ...JSON.parse(data), code: "SOME_FUTURE_REFUSAL" }) });
          return "drop";
        },
      },
    });
    await opened(c);
    await fetch(`${suite.gw.url}/internal/v1/users/frame-first-3/revoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "test" },
    });
    await until("closed", () => c.client.state === "closed");
    expect(c.rec.states.at(-1)).toMatchObject({ state: "closed", code: 1006 });
    expect(c.rec.errors.some((e) => e.fatal && e.message === "The session was revoked. Sign in again.")).toBe(true); // the frame's own message
    expect(c.pendingTimers()).toBe(0); // nothing scheduled: no reconnect can follow
    expect(c.sockets.urls).toHaveLength(1);
  });

  it("a fatal SERVICE_RESTART frame followed by 1006: reconnects at once (jitter only), not after a backoff", async () => {
    const first = await startGatewayOn(0, { REDIS_URL: suite.redis.url });
    const c = suite.track(
      clientFor(first, "frame-first-2", { hooks: asWebKitDrop(), random: () => 0.5, backoff: { reconnectNowMaxMs: 300, baseMs: 60_000, maxMs: 60_000 } }),
    );
    await opened(c);
    const port = portOf(first);
    await first.close();
    const replacement = await startGatewayOn(port, { REDIS_URL: suite.redis.url });
    try {
      await opened(c, 2, 8000);
      const drop = c.rec.states.find((s) => s.code === 1006)!;
      expect(drop).toMatchObject({ errorCode: "SERVICE_RESTART", retryInMs: 150 }); // not 30 000 (0.5 · 60 s)
    } finally {
      await replacement.close();
    }
  });
});

describe("stop: no retry", () => {
  it("4501 after a revoke: closed, with the reason, and no further attempt", async () => {
    const c = suite.client("revoke-1");
    await opened(c);
    expect(c.pendingTimers()).toBeGreaterThan(0); // the counter sees the SDK's timers (the ping), so the 0 below means something
    const res = await fetch(`${suite.gw.url}/internal/v1/users/revoke-1/revoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "test" },
    });
    expect(res.status).toBe(200);
    await until("closed", () => c.client.state === "closed");
    const last = c.rec.states.at(-1)!;
    expect(last).toMatchObject({ state: "closed", code: 4501, errorCode: "SESSION_REVOKED", reason: "signed out: session revoked" });
    expect(last.retryInMs).toBeUndefined();
    expect(c.pendingTimers()).toBe(0); // nothing scheduled: no new ticket, no reconnect can follow
    expect(c.tickets.length).toBe(1);
    expect(c.sockets.urls).toHaveLength(1);
  });

  it("4500 when the socket's Origin is not allowed", async () => {
    // The ticket request sends the allowed origin, the socket another one: the gateway refuses the socket.
    const c = suite.client("origin-1", { origin: "https://evil.example.test", fetchOrigin: ORIGIN });
    await until("closed", () => c.client.state === "closed");
    expect(c.rec.states.at(-1)).toMatchObject({ code: 4500, errorCode: "ORIGIN_FORBIDDEN", reason: "origin not allowed" });
    expect(c.pendingTimers()).toBe(0); // nothing scheduled: no reconnect can follow
    expect(c.sockets.urls).toHaveLength(1);
  });

  it("403 ORIGIN_FORBIDDEN from the ticket endpoint: stops before opening any socket", async () => {
    const d = suite.client("origin-2", { origin: "https://evil.example.test" });
    await until("closed", () => d.client.state === "closed");
    expect(d.rec.states.at(-1)).toMatchObject({ state: "closed", errorCode: "ORIGIN_FORBIDDEN" });
    expect(d.rec.errors.at(-1)).toMatchObject({ status: 403, fatal: true });
    expect(d.sockets.urls).toHaveLength(0);
  });

  it("1009 after a frame over MAX_MESSAGE_BYTES", async () => {
    const small = await startGatewayOn(0, { REDIS_URL: suite.redis.url, MAX_MESSAGE_BYTES: "256" });
    try {
      // The app told the SDK the wrong limit, so the SDK's own check lets the message through.
      const c = suite.track(clientFor(small, "big-1", { maxMessageBytes: 65_536 }));
      await opened(c);
      c.client.send("x".repeat(1000), { threadId: "t" });
      await until("closed", () => c.client.state === "closed");
      expect(c.rec.states.at(-1)).toMatchObject({ code: 1009, errorCode: "MESSAGE_TOO_BIG" });
      expect(c.pendingTimers()).toBe(0); // nothing scheduled: no reconnect can follow
      expect(c.sockets.urls).toHaveLength(1);
    } finally {
      await small.close();
    }
  });

  it("1003 after a binary frame", async () => {
    const c = suite.client("binary-1", {
      // A broken transport that turns text into binary frames.
      hooks: { outgoing: (data, send) => send(Buffer.from(data)) },
    });
    await opened(c);
    c.client.send("hello", { threadId: "t" });
    await until("closed", () => c.client.state === "closed");
    expect(c.rec.states.at(-1)).toMatchObject({ code: 1003, errorCode: "UNSUPPORTED_DATA" });
    expect(c.pendingTimers()).toBe(0); // nothing scheduled: no reconnect can follow
    expect(c.sockets.urls).toHaveLength(1);
  });
});

describe("the ticket endpoint's errors", () => {
  it("401 TOKEN_EXPIRED: asks the app for a fresh token (forceRefresh) and connects", async () => {
    let calls = 0;
    const c = suite.client("expired-1", {
      backoff: { baseMs: 20, maxMs: 50 },
      // The app's cached token expired a minute ago; asked to refresh, it gets a new one.
      getToken: ({ forceRefresh }) => (calls++, mintToken({ sub: "expired-1", expiresInSeconds: forceRefresh ? 3600 : -60 })),
    });
    await opened(c);
    expect(c.tickets.map((t) => t.status)).toEqual([401, 201]);
    expect(c.tokenRequests).toEqual([{ forceRefresh: false }, { forceRefresh: true }]);
    expect(c.rec.states.find((s) => s.errorCode === "TOKEN_EXPIRED")?.reason).toBe("sign-in expired, renewing…");
    expect(calls).toBe(2);
    expect(c.rec.retryDelays).toEqual([0]); // at once, not after a backoff
  });

  it("401 TOKEN_INVALID (a dev server restarted with another key): retries at once with a fresh token, then backs off", async () => {
    let valid = false;
    const c = suite.client("stale-key-1", {
      random: () => 0.999,
      backoff: { baseMs: 200, maxMs: 1000 },
      // Signed with a key the gateway no longer has, until the app's auth service catches up.
      getToken: () => mintToken({ sub: "stale-key-1" }, valid ? undefined : "a-key-the-gateway-does-not-know-0123456789"),
    });
    await until("three refusals", () => c.tickets.length >= 3, 5000);
    valid = true;
    await opened(c, 1, 5000);
    expect(c.tickets.slice(0, 3).map((t) => t.status)).toEqual([401, 401, 401]);
    const delays = c.rec.retryDelays;
    expect(delays[0]).toBe(0); // the first refusal: at once
    expect(delays[1]).toBe(199); // the refreshed token refused too: backoff 0.999 · 200
    expect(delays[2]).toBe(399);
    expect(c.tokenRequests.slice(1).every((r) => r.forceRefresh)).toBe(true);
  });

  it("429 RATE_LIMITED: waits at least Retry-After", async () => {
    const limited = await startGatewayOn(0, { REDIS_URL: suite.redis.url, TICKET_RATE_PER_USER: "1" });
    try {
      expect((await requestTicket(limited, await mintToken({ sub: "rl-1" }))).status).toBe(201);
      const c = suite.track(clientFor(limited, "rl-1", { backoff: { baseMs: 10, maxMs: 20 } }));
      await until("refused", () => c.rec.retryDelays.length > 0);
      const retryAfter = Number(c.tickets[0]!.retryAfter);
      expect(retryAfter).toBeGreaterThan(1);
      expect(c.rec.states.at(-1)).toMatchObject({ state: "reconnecting", errorCode: "RATE_LIMITED" });
      // The backoff alone would be under 20 ms; the gateway asked for ~60 s.
      expect(c.rec.retryDelays[0]).toBeGreaterThanOrEqual((retryAfter - 1) * 1000);
      // No other attempt can come sooner: the one timer the SDK holds is that retry.
      expect(c.pendingDelays()).toEqual([c.rec.retryDelays[0]]);
      expect(c.tickets).toHaveLength(1);
    } finally {
      await limited.close();
    }
  });

  it("503 TICKET_STORE_UNAVAILABLE: honours Retry-After, then connects once the store is back", async () => {
    const own = await startRedis();
    const g = await startGatewayOn(0, { REDIS_URL: own.url });
    try {
      own.pause();
      const c = suite.track(clientFor(g, "store-1", { backoff: { baseMs: 10, maxMs: 20 } }));
      await until("503", () => c.rec.retryDelays.length > 0, 8000);
      expect(c.tickets[0]!.status).toBe(503);
      expect(c.rec.states.at(-1)).toMatchObject({ errorCode: "TICKET_STORE_UNAVAILABLE", reason: "gateway storage unavailable, retrying…" });
      expect(c.rec.retryDelays[0]).toBeGreaterThanOrEqual(1000); // Retry-After: 1
      own.resume();
      await opened(c, 1, 10_000);
    } finally {
      own.resume();
      await g.close();
      await own.stop();
    }
  });

  it("a network failure (nothing listening): retries with backoff, and the origin probe does not stop it", async () => {
    const c = suite.track(clientFor({ url: "http://127.0.0.1:9" }, "down-1", { backoff: { baseMs: 10, maxMs: 40 } }));
    await until("three failures", () => c.rec.retryDelays.length >= 3);
    expect(c.client.state).toBe("reconnecting");
    const failures = c.rec.states.filter((st) => st.retryInMs !== undefined);
    expect(failures.every((st) => st.errorCode === "NETWORK_ERROR" && st.state === "reconnecting")).toBe(true);
    expect(c.tickets.slice(0, 3).map((t) => t.status)).toEqual(["network-error", "network-error", "network-error"]);
    // after each failed ticket request, one ticketless probe socket (refused too)
    expect(c.sockets.urls.slice(0, 3)).toEqual(Array(3).fill("ws://127.0.0.1:9/ws"));
  });
});

describe("dead sockets", () => {
  it("a connection that goes quiet (pings unanswered) is abandoned and replaced", async () => {
    const c = suite.client("quiet-1", {
      pingIntervalMs: 100,
      backoff: { baseMs: 20, maxMs: 50 },
      // After connection_established, the first socket delivers nothing more: a half-open TCP connection.
      hooks: { incoming: (data, socket) => (socket === c.sockets.sockets[0] && JSON.parse(data).type !== "connection_established" ? "drop" : "pass") },
    });
    await opened(c, 2);
    expect(c.rec.states.find((s) => s.retryInMs !== undefined)).toMatchObject({ errorCode: "HEARTBEAT_TIMEOUT", reason: "connection went quiet, reconnecting…" });
    expect(sentOfType(c, "ping").length).toBeGreaterThanOrEqual(1);
  });

  it("a socket that never says connection_established is given up after connectTimeoutMs", async () => {
    const c = suite.client("mute-1", {
      connectTimeoutMs: 200,
      backoff: { baseMs: 20, maxMs: 50 },
      hooks: { incoming: (_data, socket) => (socket === c.sockets.sockets[0] ? "drop" : "pass") },
    });
    await opened(c);
    expect(c.rec.states.find((s) => s.retryInMs !== undefined)?.errorCode).toBe("CONNECT_TIMEOUT");
    expect(c.sockets.urls).toHaveLength(2);
  });
});

describe("the network", () => {
  it("does not retry while offline, and reconnects when back online", async () => {
    const net = new EventTarget() as EventTarget & { navigator: { onLine: boolean } };
    net.navigator = { onLine: true };
    const first = await startGatewayOn(0, { REDIS_URL: suite.redis.url });
    const port = portOf(first);
    const c = suite.track(clientFor(first, "offline-1", { window: net as unknown as NetworkWindow }));
    await opened(c);

    net.navigator.onLine = false;
    net.dispatchEvent(new Event("offline"));
    await first.close(); // the socket drops while offline
    const replacement = await startGatewayOn(port, { REDIS_URL: suite.redis.url });
    try {
      await until("offline state", () => c.rec.states.at(-1)?.errorCode === "OFFLINE");
      // No retry is scheduled: only the `online` event can start the next attempt.
      expect(c.pendingTimers()).toBe(0);
      expect(c.client.state).toBe("reconnecting");
      const tickets = c.tickets.length;

      net.navigator.onLine = true;
      net.dispatchEvent(new Event("online"));
      await opened(c, 2);
      expect(c.tickets.length).toBe(tickets + 1);
    } finally {
      await replacement.close();
    }
  });
});

describe("close()", () => {
  it("stops everything: no reconnect after the socket drops, no timers left", async () => {
    const c = suite.client("close-1");
    await opened(c);
    expect(c.pendingTimers()).toBeGreaterThan(0); // the ping, at least
    const tickets = c.tickets.length;
    c.client.close();
    // No timer, no socket, no network listener (window: null): nothing can start another attempt.
    expect(c.pendingTimers()).toBe(0);
    expect(c.client.state).toBe("closed");
    expect(c.rec.states.at(-1)).toMatchObject({ state: "closed", errorCode: "CLOSED_BY_APP" });
    await until("the socket closed", () => c.sockets.sockets[0]!.readyState === WebSocket.CLOSED);
    // Its close event did not reach the client: still nothing scheduled, no new ticket.
    expect(c.pendingTimers()).toBe(0);
    expect(c.client.state).toBe("closed");
    expect(c.tickets.length).toBe(tickets);
  });
});
