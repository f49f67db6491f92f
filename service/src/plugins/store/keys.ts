/**
 * Where the store keeps things in Redis: every key and channel by what it
 * holds, and the cluster hash slot each lands in.
 *
 * Every key one operation touches shares one hash tag (`{u:<id>}` for a
 * user's keys, `{t:<hash>}` for a ticket's), so every script and command runs
 * within one slot of a cluster, and a user's channel carries the user's tag
 * so a sharded message stays on the user's shard (docs/fanout.md).
 */
import { createRequire } from "node:module";

// CommonJS without type declarations: required, with its one signature written here.
const clusterKeySlot = createRequire(import.meta.url)("cluster-key-slot") as (key: string) => number;

/**
 * Makes an id safe inside a key: total (lone surrogates too, where
 * encodeURIComponent throws) and injective, and it escapes `{`, `}` and `:`,
 * so no id can move a key's hash tag or collide with another id's keys.
 */
export function encodeId(id: string): string {
  return id.replace(/[^A-Za-z0-9._~-]/g, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `%${code.toString(16).padStart(2, "0")}` : `%u${code.toString(16).padStart(4, "0")}`;
  });
}

const user = (userId: string) => `gw:{u:${encodeId(userId)}}`;
const ticket = (hash: string) => `gw:{t:${encodeId(hash)}}`;

/** Every key and channel the store uses, by what it holds. */
export const redisKeys = {
  ticket,
  ticketUsed: (hash: string) => `${ticket(hash)}:used`,
  seq: (userId: string) => `${user(userId)}:seq`,
  history: (userId: string) => `${user(userId)}:hist`,
  connections: (userId: string) => `${user(userId)}:conns`,
  revoked: (userId: string) => `${user(userId)}:revoked`,
  tokensNotBefore: (userId: string) => `${user(userId)}:nbf`,
  /** The user's ticket issuance counter (a fixed window), in the user's slot so that one script counts, checks and writes. */
  ticketRate: (userId: string) => `${user(userId)}:tickets`,
  /** Chat message ids the agent backend accepted: a sorted set (score: when), bounded per user. */
  messages: (userId: string) => `${user(userId)}:msgs`,
  /** Chat message ids being handed off: a hash (value: when claimed), entries gone once accepted or released. */
  messageClaims: (userId: string) => `${user(userId)}:claims`,
  rateLimit: (key: string) => `gw:{rl:${encodeId(key)}}`,
  userChannel: (userId: string) => `${user(userId)}:ch`,
  instanceChannel: (instanceId: string) => `gw:{i:${encodeId(instanceId)}}:ch`,
} as const;

/** The same, as patterns: `<id>` and `<messageId>` stand for ids escaped by encodeId. */
export function keyPatterns(): Record<keyof typeof redisKeys, string> {
  const names = Object.keys(redisKeys) as (keyof typeof redisKeys)[];
  const pattern = (name: keyof typeof redisKeys) =>
    (redisKeys[name] as (id: string, messageId: string) => string)("__id__", "__messageId__")
      .replace("__id__", "<id>")
      .replace("__messageId__", "<messageId>");
  return Object.fromEntries(names.map((name) => [name, pattern(name)])) as Record<keyof typeof redisKeys, string>;
}

/** The Redis Cluster hash slot of a key or shard channel, as CLUSTER KEYSLOT computes it (the same library ioredis routes with). */
export function hashSlot(key: string): number {
  return clusterKeySlot(key);
}
