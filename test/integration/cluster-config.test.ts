/**
 * REDIS_CLUSTER_NODES and REDIS_TLS (docs/protocol.md §8.4): how they are
 * read and checked, every problem at once, and that the real process runs on
 * a Redis Cluster from configuration alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, parseConfig, type Env } from "../../service/src/config.js";
import { createConfiguredStore } from "../../service/src/plugins/store/plugin.js";
import { startRedisCluster, type RedisClusterHandle } from "../support/redis-cluster.js";
import { spawnGateway } from "../support/process.js";
import { mintToken, ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "../support/gateway.js";

const MINIMAL: Env = { JWT_SECRET_KEY: TEST_JWT_KEY, SERVICE_SECRET: TEST_SERVICE_SECRET };
const PRODUCTION: Env = { ...MINIMAL, NODE_ENV: "production", ALLOWED_ORIGINS: "https://chat.example.com" };
const CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

function problemsOf(env: Env): readonly string[] {
  try {
    parseConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error(`parseConfig accepted ${JSON.stringify(env)}`);
}

describe("REDIS_CLUSTER_NODES", () => {
  it("reads a comma-separated host:port list, IPv6 in brackets, blanks ignored; TLS only with REDIS_TLS=true", () => {
    const config = parseConfig({ ...PRODUCTION, REDIS_CLUSTER_NODES: " 10.0.0.3:6379, redis-0.internal:6380 ,[fd00::1]:6379,", REDIS_PASSWORD: "pw" });
    expect(config.redis).toEqual({
      url: undefined,
      cluster: {
        nodes: [
          { host: "10.0.0.3", port: 6379 },
          { host: "redis-0.internal", port: 6380 },
          { host: "fd00::1", port: 6379 },
        ],
        tls: false,
      },
      password: "pw",
      tlsCa: undefined,
    });
    expect(parseConfig({ ...PRODUCTION, REDIS_CLUSTER_NODES: "10.0.0.3:6379", REDIS_TLS: "true", REDIS_TLS_CA: CA }).redis.cluster).toEqual({
      nodes: [{ host: "10.0.0.3", port: 6379 }],
      tls: true,
    });
  });

  it("satisfies production's need for a Redis, and leaves the single-Redis settings as they were without it", () => {
    expect(parseConfig({ ...PRODUCTION, REDIS_CLUSTER_NODES: "10.0.0.3:6379" }).redis.url).toBeUndefined();
    const single = parseConfig({ ...PRODUCTION, REDIS_URL: "rediss://10.0.0.3:6378" }).redis;
    expect(single).toEqual({ url: "rediss://10.0.0.3:6378", password: undefined, tlsCa: undefined });
    expect("cluster" in single).toBe(false);
    expect(problemsOf({ ...PRODUCTION })).toEqual([
      "REDIS_URL is required (in production, or REDIS_CLUSTER_NODES for a Redis Cluster; the in-memory store serves one instance only)",
    ]);
  });

  it("reports every problem of the Redis settings at once", () => {
    const problems = problemsOf({
      ...PRODUCTION,
      REDIS_CLUSTER_NODES: "10.0.0.3, 10.0.0.4:0, 10.0.0.5:6379, redis://10.0.0.6:6379, 10.0.0.7:65536",
      REDIS_TLS: "yes",
    });
    expect(problems).toEqual([
      'REDIS_CLUSTER_NODES entry "10.0.0.3" is not host:port (e.g. 10.0.0.3:6379)',
      'REDIS_CLUSTER_NODES entry "10.0.0.4:0" is not host:port (e.g. 10.0.0.3:6379)',
      'REDIS_CLUSTER_NODES entry "redis://10.0.0.6:6379" is not host:port (e.g. 10.0.0.3:6379)',
      'REDIS_CLUSTER_NODES entry "10.0.0.7:65536" is not host:port (e.g. 10.0.0.3:6379)',
      'REDIS_TLS must be "true" or "false"; got "yes"',
    ]);
    expect(problemsOf({ ...MINIMAL, REDIS_CLUSTER_NODES: " , " })).toEqual(["REDIS_CLUSTER_NODES names no node (comma-separated host:port, e.g. 10.0.0.3:6379)"]);
  });

  it("refuses REDIS_URL and REDIS_CLUSTER_NODES together, a CA without TLS, and a REDIS_TLS that contradicts the URL", () => {
    expect(problemsOf({ ...PRODUCTION, REDIS_URL: "redis://10.0.0.3:6379", REDIS_CLUSTER_NODES: "10.0.0.3:6379" })).toEqual([
      "REDIS_URL and REDIS_CLUSTER_NODES are mutually exclusive: set REDIS_URL for one Redis, or REDIS_CLUSTER_NODES for a Redis Cluster",
    ]);
    expect(problemsOf({ ...MINIMAL, REDIS_CLUSTER_NODES: "10.0.0.3:6379", REDIS_TLS_CA: CA })).toEqual([
      'REDIS_TLS_CA is set but REDIS_TLS is not "true": the cluster would be reached without TLS; set REDIS_TLS=true',
    ]);
    expect(problemsOf({ ...MINIMAL, REDIS_URL: "redis://10.0.0.3:6379", REDIS_TLS: "true" })).toHaveLength(1);
    expect(parseConfig({ ...MINIMAL, REDIS_URL: "rediss://10.0.0.3:6379", REDIS_TLS: "true" }).redis.url).toBe("rediss://10.0.0.3:6379");
  });
});

describe("on a real cluster", () => {
  let cluster: RedisClusterHandle;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(() => cluster?.stop());

  it("the store plugin picks the cluster from the configuration", async () => {
    const store = createConfiguredStore(parseConfig({ ...MINIMAL, REDIS_CLUSTER_NODES: cluster.startupNodes.split(",")[0]! }));
    try {
      expect(store.kind).toBe("redis");
      // One startup node is enough: the client learns the others.
      const users = Array.from({ length: 10 }, (_, i) => `config-${i}`);
      for (const user of users) await store.subscribeUser(user);
      for (const user of users) expect((await store.publishEvent(user, { type: "agent_started", event_id: "e", run_id: "r", thread_id: "t", ts: new Date().toISOString(), data: {} }, { maxEvents: 10, ttlMs: 60_000 })).seq).toBe(1);
      expect(await store.check()).toEqual({ store: true, bus: true });
    } finally {
      await store.close();
    }
  });

  it("npm start's entry runs in production on REDIS_CLUSTER_NODES alone", async () => {
    const gateway = await spawnGateway({
      NODE_ENV: "production",
      JWT_SECRET_KEY: TEST_JWT_KEY,
      SERVICE_SECRET: TEST_SERVICE_SECRET,
      ALLOWED_ORIGINS: ORIGIN,
      REDIS_CLUSTER_NODES: cluster.startupNodes,
    });
    try {
      expect(gateway.stdout.some((line) => line.includes('"event":"listening"') && line.includes('"store":"redis"'))).toBe(true);
      expect(gateway.stdout.some((line) => line.includes('"event":"redis_cluster"'))).toBe(true);
      await expect.poll(async () => (await fetch(`${gateway.url}/readyz`)).status, { timeout: 10_000 }).toBe(200);
      const res = await fetch(`${gateway.url}/api/v1/auth/websocket_ticket`, {
        method: "POST",
        headers: { authorization: `Bearer ${await mintToken({ sub: "process-user" })}`, origin: ORIGIN },
      });
      expect(res.status).toBe(201);
    } finally {
      gateway.child.kill("SIGTERM");
      await gateway.exited();
    }
  });
});
