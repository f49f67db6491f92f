/**
 * The key delivery scenarios of delivery-across-instances, resume-without-loss
 * and revoke, on three gateway instances that share a Redis Cluster
 * (REDIS_CLUSTER_NODES, 3 primaries) instead of one Redis: fan-out in order
 * and once for users on every shard, isolation, catch-up after one shard's
 * bus connections dropped, resume on another instance, and revoke across
 * instances. A primary dying mid-stream is the cluster-failover drill
 * (test/drill/cluster-failover.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashSlot, redisKeys } from "../../service/src/plugins/store/index.js";
import { startRedisCluster, type RedisClusterHandle } from "../support/redis-cluster.js";
import { publishEvent, startGateway, TestClient, TEST_SERVICE_SECRET, ticketFor, type TestGateway } from "../support/gateway.js";

let cluster: RedisClusterHandle;
let gws: [TestGateway, TestGateway, TestGateway];
beforeAll(async () => {
  cluster = await startRedisCluster();
  gws = (await Promise.all([0, 1, 2].map(() => startGateway({ env: { REDIS_CLUSTER_NODES: cluster.startupNodes } })))) as typeof gws;
});
afterAll(async () => {
  await Promise.all((gws ?? []).map((g) => g.close()));
  await cluster?.stop();
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function connect(gw: TestGateway, user: string) {
  const client = await TestClient.connect(gw, await ticketFor(gw, user));
  await client.waitForType("connection_established");
  return client;
}

/** Users named `${prefix}-N`, at least one on every primary. */
async function usersOnEveryShard(prefix: string): Promise<string[]> {
  const users: string[] = [];
  const ports = new Set<number>();
  for (let i = 0; i < 200 && ports.size < 3; i++) {
    const user = `${prefix}-${i}`;
    const port = (await cluster.primaryOf(redisKeys.userChannel(user))).port;
    if (!ports.has(port) || users.length < 6) users.push(user);
    ports.add(port);
  }
  expect(ports.size).toBe(3);
  return users;
}

/** A user whose channel is in the slot of `other`'s: on a cluster, their messages share one bus connection. */
function sameSlotAs(other: string, prefix: string): string {
  const slot = hashSlot(redisKeys.userChannel(other));
  for (let i = 0; i < 1_000_000; i++) if (hashSlot(redisKeys.userChannel(`${prefix}-${i}`)) === slot) return `${prefix}-${i}`;
  throw new Error("no user found in the slot");
}

describe("fan-out across instances on a Redis Cluster", () => {
  it("gives users on every shard, each with sockets on two instances, every event on both, in order, once", async () => {
    const [a, b, c] = gws;
    const users = await usersOnEveryShard("shards");
    const sockets = await Promise.all(users.flatMap((user) => [connect(a, user), connect(b, user)]));
    // Published through the third instance, 10 at a time concurrently per user.
    for (let i = 0; i < 5; i++) await Promise.all(users.flatMap((user) => range(1, 10).map(() => publishEvent(c, user))));
    await Promise.all(sockets.map((s) => s.waitFor((f) => f.seq === 50)));
    for (const socket of sockets) expect(socket.seqs).toEqual(range(1, 50));
    for (const socket of sockets) socket.close();
  });

  it("never shows a user another user's events, even one whose messages share its shard connection", async () => {
    const [a, b] = gws;
    const bob = sameSlotAs("alice", "bob");
    const alice = await connect(a, "alice");
    const bobs = await connect(b, bob);
    const alicesOnB = await connect(b, "alice");
    await publishEvent(a, "alice", { data: { secret: "for alice" } });
    await publishEvent(b, bob, { data: { secret: "for bob" } });
    await Promise.all([alice.waitFor((f) => f.seq === 1), alicesOnB.waitFor((f) => f.seq === 1), bobs.waitFor((f) => f.seq === 1)]);
    await new Promise((r) => setTimeout(r, 100));
    for (const socket of [alice, alicesOnB]) expect(socket.frames.filter((f) => f.seq !== undefined).map((f) => f.data)).toEqual([{ secret: "for alice" }]);
    expect(bobs.frames.filter((f) => f.seq !== undefined).map((f) => f.data)).toEqual([{ secret: "for bob" }]);
    for (const socket of [alice, alicesOnB, bobs]) socket.close();
  });

  it("catches up the sockets whose shard's bus connections dropped, while other shards deliver on", async () => {
    const [a, b] = gws;
    const [user, other] = await (async () => {
      const users = await usersOnEveryShard("outage");
      const first = users[0]!;
      const port = (await cluster.primaryOf(redisKeys.userChannel(first))).port;
      for (const candidate of users) if ((await cluster.primaryOf(redisKeys.userChannel(candidate))).port !== port) return [first, candidate];
      throw new Error("unreachable");
    })();
    const client = await connect(b, user);
    const bystander = await connect(b, other);
    await publishEvent(a, user);
    await client.waitFor((f) => f.seq === 1);
    const downBefore = b.logs.records.filter((r) => r.event === "bus_down").length;
    // Drop every subscriber connection of one primary (of each instance subscribed there); they reconnect by themselves.
    const primary = await cluster.primaryOf(redisKeys.userChannel(user));
    expect(Number(await primary.call("CLIENT", "KILL", "TYPE", "pubsub"))).toBeGreaterThanOrEqual(1);
    await Promise.all([...range(1, 20).map(() => publishEvent(a, user)), publishEvent(a, other)]);
    await bystander.waitFor((f) => f.seq === 1);
    await client.waitFor((f) => f.seq === 21, { timeoutMs: 10_000 });
    expect(client.seqs).toEqual(range(1, 21));
    expect(b.logs.records.filter((r) => r.event === "bus_down").length).toBeGreaterThan(downBefore);
    await expect.poll(async () => (await fetch(`${b.url}/readyz`)).status, { timeout: 10_000 }).toBe(200);
    client.close();
    bystander.close();
  });
});

describe("resume on a Redis Cluster", () => {
  it("replays on another instance what was published while the client was away, then resume_complete, with no hole and no duplicate", async () => {
    const [a, b] = gws;
    const first = await TestClient.connect(a, await ticketFor(a, "away"));
    const established = await first.waitForType("connection_established");
    for (let i = 0; i < 5; i++) await publishEvent(a, "away");
    await first.waitFor((f) => f.seq === 5);
    first.close();
    await first.closed;
    for (let i = 0; i < 7; i++) await publishEvent(b, "away");
    const second = await TestClient.connect(b, await ticketFor(b, "away"));
    await second.waitForType("connection_established");
    second.send({ type: "resume", last_seq: 5, epoch: established.epoch });
    expect(await second.waitForType("resume_complete")).toEqual({ type: "resume_complete", replayed: 7 });
    await publishEvent(a, "away");
    await second.waitFor((f) => f.seq === 13);
    expect([...first.seqs, ...second.seqs]).toEqual(range(1, 13));
    second.close();
  });
});

describe("revoke on a Redis Cluster", () => {
  it("closes the user's sockets on all three instances with 4501 and counts them", async () => {
    const clients = await Promise.all([...gws, gws[0]].map((g) => connect(g, "mallory")));
    const bystander = await connect(gws[1], sameSlotAs("mallory", "not-mallory"));
    const res = await fetch(`${gws[2].url}/internal/v1/users/mallory/revoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "agent-backend", "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ closed: 4 });
    const closes = await Promise.all(clients.map((c) => c.closed));
    expect(closes.every((c) => c.code === 4501 && c.reason === "SESSION_REVOKED")).toBe(true);
    expect(bystander.socket.readyState).toBe(bystander.socket.OPEN);
    bystander.close();
  });

  it("reports every instance ready, its store and bus on the cluster", async () => {
    for (const gw of gws) {
      const res = await fetch(`${gw.url}/readyz`);
      expect(res.status).toBe(200);
    }
    expect(gws[0].app.store.kind).toBe("redis");
  });
});
