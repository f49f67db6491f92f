export * from "./types.js";
export { createRedisStore, type RedisClusterNode, type RedisStoreOptions, type StoreLogger } from "./redis.js";
export { hashSlot, keyPatterns, redisKeys } from "./keys.js";
export { createMemoryStore, type MemoryStoreOptions } from "./memory.js";
