import fp from "fastify-plugin";
import type { Config } from "../../config.js";
import { createMemoryStore } from "./memory.js";
import { createRedisStore, type StoreLogger } from "./redis.js";
import type { Store } from "./types.js";

declare module "fastify" {
  interface FastifyInstance {
    store: Store;
  }
}

/**
 * Decorates `store`: a Redis Cluster when REDIS_CLUSTER_NODES is set, one
 * Redis when REDIS_URL is (config.ts allows one of the two), else the embedded
 * memory store (one instance only; config.ts refuses it in production). A
 * store the app created is closed in onClose, after the sockets have drained;
 * a store handed in belongs to the caller.
 */
export function createConfiguredStore(config: Config, logger?: StoreLogger): Store {
  const { url, cluster, username, password, tlsCa } = config.redis;
  if (cluster !== undefined) return createRedisStore({ cluster, username, password, tlsCa, logger });
  if (url !== undefined) return createRedisStore({ url, username, password, tlsCa, logger });
  return createMemoryStore();
}

export const storePlugin = fp<{ config: Config; store?: Store }>(
  async (app, { config, store }) => {
    const owned = store === undefined;
    const instance = store ?? createConfiguredStore(config, app.log);
    if (owned && instance.kind === "memory") {
      app.log.warn(
        { event: "memory_store" },
        "Neither REDIS_URL nor REDIS_CLUSTER_NODES is set: using the embedded in-memory store (single instance only, nothing survives a restart)",
      );
    } else if (owned && config.redis.cluster !== undefined) {
      app.log.info(
        { event: "redis_cluster", nodes: config.redis.cluster.nodes.length, tls: config.redis.cluster.tls },
        "using Redis Cluster (sharded pub/sub)",
      );
    }
    app.decorate("store", instance);
    if (owned) app.addHook("onClose", async () => instance.close());
  },
  { name: "store" },
);
