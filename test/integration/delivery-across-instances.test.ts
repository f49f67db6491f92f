import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisKeys } from "../../service/src/plugins/store/redis.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { publishEvent, startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";

// Three gateway instances share one real Redis, as Cloud Run instances do.
let redis: RedisServerHandle;
let gws: TestGateway[];
let admin: Redis;
beforeAll(async () => {
  redis = await startRedis();
  gws = await Promise.all([0, 1, 2].map(() => startGateway({ env: { REDIS_URL: redis.url } })));
  admin = new Redis(redis.url);
});
afterAll(async () => {
  admin?.disconnect();
  await Promise.all(gws.map((g) => g.close()));
  await redis?.stop();
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function connect(gw: TestGateway, user: string) {
  const client = await TestClient.connect(gw, await ticketFor(gw, user));
  await client.waitForType("connection_established");
  return client;
}

describe("fan-out across instances", () => {
  it("gives a user with sockets on two instances every event on both, in order, once", async () => {
    const [a, b, c] = gws as [TestGateway, TestGateway, TestGateway];
    const onA = await connect(a, "two-sockets");
    const onB = await connect(b, "two-sockets");
    // Published through the third instance, 10 at a time concurrently.
    for (let i = 0; i < 10; i++) await Promise.all(range(1, 10).map(() => publishEvent(c, "two-sockets")));
    await Promise.all([onA.waitFor((f) => f.seq === 100), onB.waitFor((f) => f.seq === 100)]);
    expect(onA.seqs).toEqual(range(1, 100));
    expect(onB.seqs).toEqual(range(1, 100));
    onA.close();
    onB.close();
  });

  it("never shows a user another user's events", async () => {
    const [a, b] = gws as [TestGateway, TestGateway];
    const alice = await connect(a, "alice");
    const bob = await connect(b, "bob");
    await publishEvent(a, "alice", { data: { secret: "for alice" } });
    await publishEvent(b, "bob", { data: { secret: "for bob" } });
    await alice.waitFor((f) => f.seq === 1);
    await bob.waitFor((f) => f.seq === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(alice.frames.filter((f) => f.seq !== undefined).map((f) => f.data)).toEqual([{ secret: "for alice" }]);
    expect(bob.frames.filter((f) => f.seq !== undefined).map((f) => f.data)).toEqual([{ secret: "for bob" }]);
    alice.close();
    bob.close();
  });

  it("fills an event whose bus message was lost from history, so the client sees no hole", async () => {
    const [a] = gws as [TestGateway];
    const client = await connect(a, "lossy");
    await publishEvent(a, "lossy");
    await client.waitFor((f) => f.seq === 1);
    // Event 2 is stored but its pub/sub message never arrives (as when a subscriber drops a message).
    const seq = await admin.hincrby(redisKeys.seq("lossy"), "n", 1);
    const body = JSON.stringify({ type: "agent_thinking", event_id: "lost-1", run_id: "r", thread_id: "t", ts: new Date().toISOString(), data: { lost: true } });
    await admin.xadd(redisKeys.history("lossy"), "*", "s", String(seq), "b", body);
    await publishEvent(a, "lossy");
    await client.waitFor((f) => f.seq === 3);
    expect(client.seqs).toEqual([1, 2, 3]);
    expect(client.frames.find((f) => f.seq === 2)?.data).toEqual({ lost: true });
    client.close();
  });

  it("catches every connection up after its bus connection dropped, and /readyz says so meanwhile", async () => {
    const [a, b] = gws as [TestGateway, TestGateway];
    const client = await connect(b, "bus-outage");
    await publishEvent(a, "bus-outage");
    await client.waitFor((f) => f.seq === 1);
    // Drop every subscriber connection; the bus reconnects by itself.
    await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
    await Promise.all(range(1, 20).map(() => publishEvent(a, "bus-outage")));
    await client.waitFor((f) => f.seq === 21, { timeoutMs: 10_000 });
    expect(client.seqs).toEqual(range(1, 21));
    const ready = await fetch(`${b.url}/readyz`);
    expect(ready.status).toBe(200);
    const down = b.logs.records.filter((r) => r.event === "bus_down").length;
    const up = b.logs.records.filter((r) => r.event === "bus_up").length;
    expect(down).toBeGreaterThanOrEqual(1);
    expect(up).toBeGreaterThanOrEqual(1);
    client.close();
  });

  it("reports the bus and store as unreachable in /readyz while Redis is down", async () => {
    const [a] = gws as [TestGateway];
    redis.pause();
    try {
      const res = await fetch(`${a.url}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({ status: "degraded" }); // the detail is on the metrics port only (health-and-metrics.test.ts)
    } finally {
      redis.resume();
    }
    await expect.poll(async () => (await fetch(`${a.url}/readyz`)).status, { timeout: 10_000 }).toBe(200);
  });

  it("counts published and delivered events and the bus lag", async () => {
    const text = await gws[0]!.app.metrics.registry.metrics();
    expect(text).toMatch(/gateway_events_published_total \d+/);
    expect(text).toMatch(/gateway_events_delivered_total [1-9]\d*/);
    expect(text).toMatch(/gateway_bus_lag_seconds_count [1-9]\d*/);
  });
});
