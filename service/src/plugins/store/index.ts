export * from "./types.js";
export { createRedisStore, hashSlot, keyPatterns, redisKeys, type RedisClusterNode, type RedisStoreOptions, type StoreLogger } from "./redis.js";
export { createMemoryStore, type MemoryStoreOptions } from "./memory.js";
