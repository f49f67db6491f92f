export * from "./types.js";
export { createRedisStore, keyPatterns, redisKeys, type RedisStoreOptions, type StoreLogger } from "./redis.js";
export { createMemoryStore, type MemoryStoreOptions } from "./memory.js";
