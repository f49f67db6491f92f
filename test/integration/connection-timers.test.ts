import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";
import { until } from "../support/wait.js";

/**
 * Connections keep their deadlines (session end, live hold) on the hub's one
 * timer wheel, not on timers of their own: each open connection has its
 * entries there, and a closed one leaves none behind (no leak per socket).
 */
let redis: RedisServerHandle;
let gw: TestGateway;
beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url } });
});
afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

describe("connection deadlines on the hub's timer wheel", () => {
  it("holds one session deadline per open connection, the hold until the first frame, and nothing once closed", async () => {
    const wheel = gw.app.hub.timers;
    const idle = wheel.size; // the hub's own repeating work (heartbeat, connection refresh)
    const clients = await Promise.all(["t-1", "t-2", "t-3"].map(async (user) => TestClient.connect(gw, await ticketFor(gw, user))));
    await Promise.all(clients.map((c) => c.waitForType("connection_established")));
    // Each: its session deadline and its live hold.
    expect(wheel.size).toBe(idle + 6);
    for (const c of clients) c.send({ type: "resume", last_seq: 0 });
    await Promise.all(clients.map((c) => c.waitForType("resume_complete")));
    expect(wheel.size).toBe(idle + 3);
    for (const c of clients) c.close();
    await Promise.all(clients.map((c) => c.closed));
    await until("the gateway to see the closes", () => gw.app.hub.size === 0);
    expect(wheel.size).toBe(idle);
  });

  it("leaves nothing behind for a connection the server closes", async () => {
    const wheel = gw.app.hub.timers;
    const idle = wheel.size;
    const client = await TestClient.connect(gw, await ticketFor(gw, "t-flood"));
    await client.waitForType("connection_established");
    for (let i = 0; i < 200; i++) client.send({ type: "ping", id: i });
    expect((await client.closed).code).toBe(4429);
    await until("the gateway to see the close", () => gw.app.hub.size === 0);
    expect(wheel.size).toBe(idle);
  });
});
