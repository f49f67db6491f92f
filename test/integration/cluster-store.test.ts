/**
 * The Redis store on a real Redis Cluster, where a single Redis has no
 * counterpart: a primary that dies and a replica that takes over, a failover
 * that loses acknowledged writes (replication is asynchronous), a slot that
 * moves to another primary (resharding), TLS and AUTH on every node, and no
 * cluster at all. The contract itself runs on a cluster in
 * store-contract.test.ts.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRedisStore,
  hashSlot,
  redisKeys,
  StoreUnavailableError,
  type AgentEventInput,
  type BusMessage,
  type HistoryLimits,
  type RedisClusterNode,
  type Store,
} from "../../service/src/plugins/store/index.js";
import { runScript } from "../support/process.js";
import { makeCertificates, startRedisCluster, type ClusterNodeHandle, type RedisClusterHandle } from "../support/redis-cluster.js";
import { sleep, until, waitFor } from "../support/wait.js";

const LIMITS: HistoryLimits = { maxEvents: 1000, ttlMs: 900_000 };

describe("on a cluster with replicas", () => {
  let cluster: RedisClusterHandle;
  let nodes: RedisClusterNode[];
  const stores: Store[] = [];
  const create = (commandTimeoutMs?: number) => {
    const store = createRedisStore({ cluster: { nodes }, commandTimeoutMs });
    stores.push(store);
    return store;
  };
  beforeAll(async () => {
    cluster = await startRedisCluster({ replicas: 1 });
    nodes = nodesOf(cluster);
  });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await cluster?.stop();
  });

  /** Kills the primary, waits for its replica to take over, then brings the old one back (as a replica). */
  async function failOver(primary: ClusterNodeHandle, meanwhile: () => Promise<void> = async () => {}) {
    await primary.kill();
    await meanwhile();
    await cluster.waitHealthy();
    await primary.restart();
    await cluster.waitHealthy();
  }

  it("reports the bus down when a primary dies and up once its replica serves the slot, with the channels subscribed there", async () => {
    const store = create();
    const publisher = create();
    await waitFor(async () => (await store.check()).bus && (await publisher.check()).bus, 10_000);
    const statuses: boolean[] = [];
    store.onBusStatus((up) => statuses.push(up));
    const got = collect(store);
    // Users on every shard, and this instance's reply channel.
    const users = Array.from({ length: 12 }, () => uid("user"));
    const instanceId = uid("instance");
    for (const userId of users) await store.subscribeUser(userId);
    await store.subscribeInstance(instanceId);
    const victim = await cluster.primaryOf(redisKeys.userChannel(users[0]!));
    const [replica] = await cluster.replicasOf(victim);
    let elsewhere: string | undefined;
    for (const userId of users) if ((await cluster.primaryOf(redisKeys.userChannel(userId))).port !== victim.port) elsewhere ??= userId;

    await failOver(victim, async () => {
      await waitFor(() => statuses.length === 1);
      expect(statuses).toEqual([false]);
      // The other shards serve their users meanwhile.
      expect((await publisher.publishEvent(elsewhere!, event(1), LIMITS)).seq).toBe(1);
    });
    await upAgain(store, statuses);
    expect((await cluster.primaryOf(redisKeys.userChannel(users[0]!))).port).toBe(replica!.port);

    for (const userId of users) await publisher.publishEvent(userId, event(2), LIMITS);
    await publisher.publishInstance(instanceId, "after failover");
    await waitFor(() => users.every((userId) => eventsOf(got, userId).some((m) => JSON.parse(m.event.body).event_id === "e2")));
    await waitFor(() => got.some((m) => m.kind === "instance_control" && m.payload === "after failover"));
    expect(await store.check()).toEqual({ store: true, bus: true });
  });

  it("starts a new epoch when a failover lost acknowledged events, so no seq is ever handed out twice in one epoch", async () => {
    const store = create();
    await waitFor(async () => (await store.check()).bus, 10_000);
    const userId = uid("user");
    const primary = await cluster.primaryOf(redisKeys.seq(userId));
    // A node restarted by an earlier test may not have re-attached as this primary's replica yet.
    const replica = await until("a replica of the primary", async () => (await cluster.replicasOf(primary))[0], 15_000);
    for (let i = 1; i <= 3; i++) await store.publishEvent(userId, event(i), LIMITS);
    expect(await primary.call("WAIT", 1, 2000)).toBe(1); // 1..3 reached the replica
    const before = await store.head(userId);

    // Cut the replica off, then acknowledge two more events it will never see.
    replica.pause();
    await primary.call("CLIENT", "KILL", "TYPE", "replica");
    const lost = [await store.publishEvent(userId, event(4), LIMITS), await store.publishEvent(userId, event(5), LIMITS)];
    expect(lost).toEqual([
      { seq: 4, epoch: before.epoch },
      { seq: 5, epoch: before.epoch },
    ]);
    await failOver(primary, async () => replica.resume());
    expect((await cluster.primaryOf(redisKeys.seq(userId))).port).toBe(replica!.port);

    // The promoted replica's counter is at 3: seqs 4 and 5 will be given to other events, so the epoch is new.
    const after = await store.head(userId);
    expect(after.latestSeq).toBe(3);
    expect(after.epoch).not.toBe(before.epoch);
    expect(await store.publishEvent(userId, event(6), LIMITS)).toEqual({ seq: 4, epoch: after.epoch });
    const read = await store.readHistory(userId, 3, LIMITS);
    expect(read).toMatchObject({ epoch: after.epoch, latestSeq: 4, complete: true });
    expect(read.events.map((e) => JSON.parse(e.body).event_id)).toEqual(["e6"]);
  });

  it("follows a slot that moves to another primary: the bus reports the gap and subscribes the channel on its new node", async () => {
    const store = create();
    const publisher = create();
    await waitFor(async () => (await store.check()).bus && (await publisher.check()).bus, 10_000);
    const statuses: boolean[] = [];
    store.onBusStatus((up) => statuses.push(up));
    const got = collect(store);
    const userId = uid("user");
    const neighbour = uid("user"); // in another slot: stays put, and keeps its subscription
    await store.subscribeUser(userId);
    await store.subscribeUser(neighbour);
    const first = await publisher.publishEvent(userId, event(1), LIMITS);
    await waitFor(() => eventsOf(got, userId).length === 1);

    const slot = hashSlot(redisKeys.userChannel(userId));
    const from = await cluster.primaryOf(redisKeys.userChannel(userId));
    const to = (await primaries(cluster)).find((node) => node.port !== from.port)!;
    await migrateSlot(cluster, slot, from, to);
    // The old primary drops its subscribers of the slot (an unasked SUNSUBSCRIBE): a gap, reported, then closed.
    await upAgain(store, statuses);

    const next = await publisher.publishEvent(userId, event(2), LIMITS);
    await publisher.publishEvent(neighbour, event(1), LIMITS);
    await waitFor(() => eventsOf(got, userId).length === 2 && eventsOf(got, neighbour).length === 1);
    // The keys moved with the slot: the counter went on. Its new primary has another replication history,
    // so the epoch changed all the same (a resync for the slot's users, never a reissued seq).
    expect(next.seq).toBe(2);
    expect(next.epoch).not.toBe(first.epoch);
  });
});

describe("with TLS and AUTH on every node", () => {
  let dir: string;
  let cluster: RedisClusterHandle;
  let ca: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "gw-cluster-tls-"));
    const files = await makeCertificates(dir);
    ca = await readFile(files.caFile, "utf8");
    cluster = await startRedisCluster({ tls: files, password: "cluster-s3cret" });
  });
  afterAll(async () => {
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("works with tls and the CA and password, and fails cleanly (StoreUnavailableError, no credential logged) without them", async () => {
    const nodes = nodesOf(cluster);
    const logs: string[] = [];
    const logger = { warn: (obj: object, msg: string) => logs.push(JSON.stringify([obj, msg])), info: () => {} };
    const good = createRedisStore({ cluster: { nodes, tls: true }, tlsCa: ca, password: "cluster-s3cret", logger });
    const noPassword = createRedisStore({ cluster: { nodes, tls: true }, tlsCa: ca, logger, commandTimeoutMs: 300 });
    const noCa = createRedisStore({ cluster: { nodes, tls: true }, password: "cluster-s3cret", logger, commandTimeoutMs: 300 });
    const plain = createRedisStore({ cluster: { nodes }, password: "cluster-s3cret", logger, commandTimeoutMs: 300 });
    try {
      await waitFor(async () => (await good.check()).bus, 10_000);
      const got = collect(good);
      const users = Array.from({ length: 6 }, () => uid("user"));
      for (const userId of users) await good.subscribeUser(userId);
      for (const userId of users) expect((await good.publishEvent(userId, event(1), LIMITS)).seq).toBe(1);
      await waitFor(() => users.every((userId) => eventsOf(got, userId).length === 1));
      for (const bad of [noPassword, noCa, plain]) {
        await expect(bad.head(uid("user"))).rejects.toBeInstanceOf(StoreUnavailableError);
        expect(await bad.check()).toMatchObject({ store: false });
      }
      expect(logs.length).toBeGreaterThan(0);
      for (const line of logs) expect(line).not.toContain("cluster-s3cret");
    } finally {
      await Promise.all([good, noPassword, noCa, plain].map((s) => s.close()));
    }
  });
});

describe("with no cluster to reach", () => {
  it("rejects every call within commandTimeoutMs, reports both down, and leaves no handles after close", async () => {
    const dir = await mkdtemp(join(tmpdir(), "gw-cluster-exit-"));
    const script = join(dir, "exit.mts");
    await writeFile(
      script,
      `import { createRedisStore, StoreUnavailableError } from ${JSON.stringify(resolve("service/src/plugins/store/index.ts"))};
const store = createRedisStore({ cluster: { nodes: [{ host: "127.0.0.1", port: 1 }, { host: "127.0.0.1", port: 2 }] }, commandTimeoutMs: 300 });
const started = performance.now();
const results = await Promise.allSettled([store.head("u"), store.subscribeUser("u"), store.publishUserControl("u", "x"),
  store.issueTicket({ hash: "t", slot: 0 }, { sub: "u", sessionExpiresAt: 1, origin: null, issuedAt: 1, expiresAt: 2 }, 1000, { perUser: 5, windowMs: 1000 }),
  store.admit({ ticket: { hash: "t", slot: 0 }, origin: null, nowMs: 1, connectionId: "c", maxConnections: 5, connectionTtlMs: 1000 })]);
const ms = performance.now() - started;
const check = await store.check();
await store.close();
console.log(JSON.stringify({ unavailable: results.every((r) => r.status === "rejected" && r.reason instanceof StoreUnavailableError), fast: ms < 1000, check }));
`,
    );
    try {
      const { code, output } = await runScript(script);
      expect({ code, output }).toEqual({ code: 0, output: JSON.stringify({ unavailable: true, fast: true, check: { store: false, bus: false } }) });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

// ── helpers ──

/**
 * Waits (10 s) for the bus to be reported up again after it was reported
 * down, and checks the reports alternate. A second down/up may follow the
 * first: a node that just restarted can serve an out-of-date slot map for a
 * moment, and a map that moves channels is reported as a gap. Never up twice
 * in a row, never up before down.
 */
async function upAgain(store: Store, statuses: boolean[]): Promise<void> {
  const started = Date.now();
  try {
    await waitFor(async () => statuses.length >= 2 && statuses.at(-1) === true && (await store.check()).bus, 10_000);
  } catch {
    throw new Error(`the bus was not reported up again within 10 s: ${JSON.stringify(statuses)}, check ${JSON.stringify(await store.check())}, ${Date.now() - started} ms`);
  }
  expect(statuses.length % 2).toBe(0);
  expect(statuses).toEqual(statuses.map((_, i) => i % 2 === 1));
}

function nodesOf(cluster: RedisClusterHandle): RedisClusterNode[] {
  return cluster.startupNodes.split(",").map((address) => ({ host: "127.0.0.1", port: Number(address.split(":")[1]) }));
}

async function primaries(cluster: RedisClusterHandle): Promise<ClusterNodeHandle[]> {
  const topology = await cluster.topology();
  const ports = topology.filter((n) => n.master && n.slots.length > 0 && !n.flags.includes("fail")).map((n) => n.port);
  return cluster.nodes.filter((node) => node.running && ports.includes(node.port));
}

/** Moves one slot and its keys, as resharding does: IMPORTING/MIGRATING, MIGRATE, then SETSLOT NODE everywhere. */
async function migrateSlot(cluster: RedisClusterHandle, slot: number, from: ClusterNodeHandle, to: ClusterNodeHandle) {
  const topology = await cluster.topology();
  const idOf = (node: ClusterNodeHandle) => topology.find((n) => n.port === node.port)!.id;
  await to.call("CLUSTER", "SETSLOT", slot, "IMPORTING", idOf(from));
  await from.call("CLUSTER", "SETSLOT", slot, "MIGRATING", idOf(to));
  for (let round = 0; round < 100; round++) {
    const keys = (await from.call("CLUSTER", "GETKEYSINSLOT", slot, 100)) as string[];
    if (keys.length === 0) break;
    await from.call("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", ...keys);
  }
  for (const node of await primaries(cluster)) await node.call("CLUSTER", "SETSLOT", slot, "NODE", idOf(to));
}

function collect(store: Store): BusMessage[] {
  const got: BusMessage[] = [];
  store.onMessage((message) => got.push(message));
  return got;
}

function eventsOf(got: BusMessage[], userId: string) {
  return got.filter((m): m is Extract<BusMessage, { kind: "event" }> => m.kind === "event" && m.userId === userId);
}

function event(n: number): AgentEventInput {
  return { type: "agent_thinking", event_id: `e${n}`, run_id: "run-1", thread_id: "thread-1", ts: new Date().toISOString(), data: { n } };
}

function uid(prefix: string): string {
  return `${prefix}-${randomUUID()}`;
}

