/**
 * The Redis keys of the stack configuration: which Memorystore product
 * (`redisMode`), the shape of an instance or of a cluster, and the rules a
 * production stack must meet (replicated, Redis 7 or later for sharded pub/sub).
 */
import type { StackReaders } from "./configReaders.js";
import { MIN_REDIS_VERSION, REDIS_CLUSTER_NODE_TYPES, REDIS_MODES, REDIS_TIERS, type StackConfig } from "./configTypes.js";

/** Keys that only one Redis shape reads; setting one for the other shape is a mistake, reported. */
const INSTANCE_ONLY_KEYS = ["redisTier", "redisSizeGb", "redisVersion"] as const;
const CLUSTER_ONLY_KEYS = [
  "redisShardCount",
  "redisReplicaCount",
  "redisNodeType",
  "redisPscSubnetCidr",
  "redisPasswordGeneration",
  "redisPreviousPasswordGeneration",
] as const;

export type RedisStackConfig = Pick<
  StackConfig,
  | "redisMode"
  | "redisTier"
  | "redisSizeGb"
  | "redisVersion"
  | "redisShardCount"
  | "redisReplicaCount"
  | "redisNodeType"
  | "redisPscSubnetCidr"
  | "redisPasswordGeneration"
  | "redisPreviousPasswordGeneration"
>;

export function readRedisConfig(r: StackReaders): RedisStackConfig {
  const redisMode = r.oneOf("redisMode", REDIS_MODES, "instance");
  const misplaced = redisMode === "cluster" ? INSTANCE_ONLY_KEYS : CLUSTER_ONLY_KEYS;
  for (const key of misplaced) {
    if (r.str(key) !== undefined) r.problems.push(`${key} is a setting of redisMode ${redisMode === "cluster" ? "instance" : "cluster"}, but redisMode is ${redisMode}: remove it or change redisMode`);
  }
  return { redisMode, ...readInstanceShape(r, redisMode), ...readClusterShape(r, redisMode) };
}

/** `redisMode: instance`: one Memorystore for Redis instance. */
function readInstanceShape(r: StackReaders, redisMode: string): Pick<StackConfig, "redisTier" | "redisSizeGb" | "redisVersion"> {
  const { production, problems } = r;
  const redisTier = r.oneOf("redisTier", REDIS_TIERS, production ? "STANDARD_HA" : "BASIC");
  if (production && redisMode === "instance" && redisTier !== "STANDARD_HA") {
    problems.push("redisTier must be STANDARD_HA in a production stack (a BASIC instance loses every ticket and the event history on any failure)");
  }
  const redisSizeGb = r.int("redisSizeGb", 1, 1, 300, "GiB, Memorystore's range");
  const redisVersion = r.matching("redisVersion", r.str("redisVersion") ?? "REDIS_7_2", /^REDIS_\d+_\d+$/, "a Memorystore version like REDIS_7_2");
  const version = /^REDIS_(\d+)_(\d+)$/.exec(redisVersion);
  if (version && (Number(version[1]) < MIN_REDIS_VERSION[0] || (Number(version[1]) === MIN_REDIS_VERSION[0] && Number(version[2]) < MIN_REDIS_VERSION[1]))) {
    problems.push(`redisVersion must be REDIS_7_0 or later, e.g. REDIS_7_2 (the gateway uses sharded pub/sub, SPUBLISH/SSUBSCRIBE); got "${redisVersion}"`);
  }
  return { redisTier, redisSizeGb, redisVersion };
}

/** `redisMode: cluster`: Memorystore for Redis Cluster. */
function readClusterShape(
  r: StackReaders,
  redisMode: string,
): Omit<RedisStackConfig, "redisMode" | "redisTier" | "redisSizeGb" | "redisVersion"> {
  const { production, problems } = r;
  // https://cloud.google.com/memorystore/docs/cluster/cluster-node-specification: 1 to 250 shards, 0 to 2 replicas per shard.
  const redisShardCount = r.int("redisShardCount", 3, 1, 250, "shards (primaries) of the cluster, Memorystore's range");
  const redisReplicaCount = r.int("redisReplicaCount", production ? 1 : 0, 0, 2, "replicas per shard, Memorystore's range");
  if (production && redisMode === "cluster" && redisReplicaCount < 1) {
    problems.push("redisReplicaCount must be at least 1 in a production stack (a shard without a replica loses its tickets and history on any failure)");
  }
  const redisNodeType = r.oneOf("redisNodeType", REDIS_CLUSTER_NODE_TYPES, "REDIS_HIGHMEM_MEDIUM");
  const redisPscSubnetCidr = r.str("redisPscSubnetCidr") ?? "10.8.1.0/28";
  const redisPasswordGeneration = r.int("redisPasswordGeneration", 1, 1, 1_000_000, "raise it by one to rotate the Redis ACL password");
  const redisPreviousPasswordGeneration =
    r.str("redisPreviousPasswordGeneration") === undefined
      ? undefined
      : r.int("redisPreviousPasswordGeneration", 1, 1, 1_000_000, "the generation whose password stays accepted during a rotation");
  if (redisPreviousPasswordGeneration !== undefined && redisPreviousPasswordGeneration >= redisPasswordGeneration) {
    problems.push(
      `redisPreviousPasswordGeneration (${redisPreviousPasswordGeneration}) must be lower than redisPasswordGeneration (${redisPasswordGeneration}), e.g. 1 while redisPasswordGeneration is 2`,
    );
  }
  return { redisShardCount, redisReplicaCount, redisNodeType, redisPscSubnetCidr, redisPasswordGeneration, redisPreviousPasswordGeneration };
}
