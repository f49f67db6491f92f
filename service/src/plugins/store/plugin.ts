import fp from "fastify-plugin";
import type { Config } from "../../config.js";
import { createMemoryStore } from "./memory.js";
import { createRedisStore } from "./redis.js";
import type { Store } from "./types.js";

declare module "fastify" {
  interface FastifyInstance {
    store: Store;
  }
}

/**
 * Decorates `store`: Redis when REDIS_URL is set, else the embedded memory
 * store (one instance only; config.ts refuses it in production). A store the
 * app created is closed in onClose, after the sockets have drained; a store
 * handed in belongs to the caller.
 */
export const storePlugin = fp<{ config: Config; store?: Store }>(
  async (app, { config, store }) => {
    const owned = store === undefined;
    const instance =
      store ??
      (config.redis.url
        ? createRedisStore({ url: config.redis.url, password: config.redis.password, tlsCa: config.redis.tlsCa, logger: app.log })
        : createMemoryStore());
    if (owned && instance.kind === "memory") {
      app.log.warn({ event: "memory_store" }, "REDIS_URL is not set: using the embedded in-memory store (single instance only, nothing survives a restart)");
    }
    app.decorate("store", instance);
    if (owned) app.addHook("onClose", async () => instance.close());
  },
  { name: "store" },
);
