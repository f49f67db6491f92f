/**
 * Where the store keeps things in Redis: every key and channel by what it
 * holds, and the cluster hash slot each lands in.
 *
 * Every key one operation touches lies in one hash slot (`{u:<id>}` tags a
 * user's keys; a ticket's keys carry a tag of its user's slot, see
 * admissionTicketKeys), so every script and command runs within one slot of
 * a cluster, and a user's channel carries the user's tag so a sharded
 * message stays on the user's shard (docs/fanout.md).
 */
import { createRequire } from "node:module";
import type { TicketRecord } from "./types.js";

// CommonJS without type declarations: required, with its one signature written here.
const clusterKeySlot = createRequire(import.meta.url)("cluster-key-slot") as (key: string) => number;

const SAFE_ID = /^[A-Za-z0-9._~-]*$/;

/**
 * Makes an id safe inside a key: total (lone surrogates too, where
 * encodeURIComponent throws) and injective, and it escapes `{`, `}` and `:`,
 * so no id can move a key's hash tag or collide with another id's keys.
 */
export function encodeId(id: string): string {
  // Most ids need no escape: skip the replace (a connect encodes several).
  if (SAFE_ID.test(id)) return id;
  return id.replace(/[^A-Za-z0-9._~-]/g, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `%${code.toString(16).padStart(2, "0")}` : `%u${code.toString(16).padStart(4, "0")}`;
  });
}

const user = (userId: string) => `gw:{u:${encodeId(userId)}}`;

/** Every key and channel the store uses, by what it holds. */
export const redisKeys = {
  /** A ticket kept in its user's slot under that slot's tag (admissionTicketKeys), and its "used" marker. */
  admissionTicket: (slotTag: string, hash: string) => `gw:{${slotTag}}:t:${encodeId(hash)}`,
  admissionTicketUsed: (slotTag: string, hash: string) => `gw:{${slotTag}}:t:${encodeId(hash)}:used`,
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

/** Redis Cluster's slot count. */
export const SLOT_COUNT = 16384;

/** The hash slot of a user's keys (every `{u:<id>}` key). */
export function userSlot(userId: string): number {
  return clusterKeySlot(redisKeys.seq(userId));
}

let slotTags: string[] | undefined;

/**
 * A short hash tag for each slot (`s<base36 n>`, at most 5 characters),
 * found once by counting n up until every slot has one (~25 ms, on first use).
 * A ticket key carrying slot s's tag lands in slot s, the slot of its user's
 * keys, without the key naming the user.
 */
function slotTag(slot: number): string {
  if (slotTags === undefined) {
    const tags = new Array<string>(SLOT_COUNT);
    for (let n = 0, left = SLOT_COUNT; left > 0; n++) {
      const tag = `s${n.toString(36)}`;
      const at = clusterKeySlot(tag);
      if (tags[at] === undefined) {
        tags[at] = tag;
        left--;
      }
    }
    slotTags = tags;
  }
  const tag = slotTags[slot];
  if (tag === undefined) throw new RangeError(`no hash slot ${slot}`);
  return tag;
}

/**
 * The keys of a ticket redeemed by admission (gwAdmit): the ticket and its
 * "used" marker, in the slot given (its user's, see userSlot), so one script
 * takes the ticket and admits the user's connection on one cluster node.
 */
export function admissionTicketKeys(slot: number, hash: string): [ticket: string, used: string] {
  const tag = slotTag(slot);
  return [redisKeys.admissionTicket(tag, hash), redisKeys.admissionTicketUsed(tag, hash)];
}

/**
 * An admission ticket's stored value: `<user key prefix> <expiresAt>
 * <issuedAt> <sessionExpiresAt> <origin or -> <record json>`. The admission
 * script reads the checks' fields from the space-separated head and hands the
 * JSON back untouched: Redis's cjson cannot decode every string a JWT `sub`
 * may hold (a lone surrogate's \uD800 escape), so the script never decodes it.
 * An origin is a serialised origin (scheme://host[:port]) or absent: no space, never "-".
 */
export function admissionTicketValue(record: TicketRecord): string {
  // The user's key prefix has no spaces: encodeId escapes them.
  const head = [user(record.sub), record.expiresAt, record.issuedAt, record.sessionExpiresAt, record.origin ?? "-"];
  return `${head.join(" ")} ${JSON.stringify(record)}`;
}
