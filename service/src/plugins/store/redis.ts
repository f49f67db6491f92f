/**
 * The production Store: one Redis (Memorystore for Redis) or a Redis Cluster
 * (Memorystore for Redis Cluster), shared by every gateway instance. The
 * choice is configuration only: the keys, the scripts and the bus are the
 * same on both.
 *
 * Commands go over one connection (a `Cluster` client on a cluster, which
 * routes each command to the primary of its key's slot). A call waits at most
 * `commandTimeoutMs` in all, for a reconnect included, then rejects with
 * StoreUnavailableError. Nothing is queued inside ioredis while it is down
 * (no offline queue, no resend of unanswered commands): a call sent after its
 * caller was told it failed could, for publishEvent, give a seq to an event
 * reported as lost.
 *
 * Every key one operation touches shares one hash tag (`{u:<id>}` for a
 * user's keys, `{t:<hash>}` for a ticket's), so every script and command runs
 * within one slot of a cluster. The bus is sharded pub/sub (SSUBSCRIBE /
 * SPUBLISH, Redis 7): a user's channel carries the user's tag, so a message
 * stays on the user's shard instead of being broadcast over the cluster bus
 * (docs/fanout.md, "On Redis Cluster"). The bus keeps one subscriber
 * connection per primary; on a single Redis that is one connection.
 */
import { randomBytes } from "node:crypto";
import { Cluster, Redis, ReplyError, type ClusterOptions, type RedisOptions } from "ioredis";
import {
  StoreCommandError,
  StoreUnavailableError,
  type AgentEventInput,
  type BusMessage,
  type ClaimOutcome,
  type HistoryLimits,
  type HistoryRead,
  type RedeemOutcome,
  type StoredEvent,
  type Store,
  type StreamHead,
  type TicketRecord,
} from "./types.js";

export interface StoreLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface RedisClusterNode {
  readonly host: string;
  readonly port: number;
}

export interface RedisStoreOptions {
  /** One Redis: `redis://` or `rediss://` (TLS). Exactly one of `url` and `cluster`. */
  readonly url?: string;
  /**
   * A Redis Cluster: some of its nodes (Memorystore for Redis Cluster's
   * discovery endpoint is enough); the client learns the others. `tls`: speak
   * TLS to every node, trusting `tlsCa` when given.
   */
  readonly cluster?: { readonly nodes: readonly RedisClusterNode[]; readonly tls?: boolean };
  /**
   * The ACL user (`AUTH username password`), overriding one in the URL; unset:
   * the default user. Memorystore for Redis Cluster's ACL policy names it.
   */
  readonly username?: string;
  /** Overrides a password in the URL; the AUTH password of every node of a cluster. */
  readonly password?: string;
  /** PEM of the CA that signed the servers' certificates (`rediss://`, or a cluster with `tls`). */
  readonly tlsCa?: string;
  /** Default 1000. */
  readonly commandTimeoutMs?: number;
  readonly logger?: StoreLogger;
}

/** How long after its ttl a ticket still says "expired" rather than "unknown". */
export const TICKET_GRACE_MS = 60_000;
/** How long a redeemed ticket still says "used" (longer than any ticket's ttl plus grace). */
export const TICKET_USED_MARKER_MS = 10 * 60_000;
/** A user's seq counter outlives any history (at most 7 days) by far: losing it changes the epoch. */
const SEQ_TTL_MS = 30 * 24 * 3600_000;
const RECONNECT_LOG_INTERVAL_MS = 10_000;
const BUS_WATCHDOG_MS = 5_000;
/** While part of the bus is down or out of date, how often the cluster map is re-read and the bus repaired. */
const BUS_REPAIR_MS = 500;
/** Channels per SSUBSCRIBE when a whole shard is subscribed again. */
const SUBSCRIBE_BATCH = 500;

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

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/** The Redis Cluster hash slot of a key or shard channel (CRC16 of its hash tag, mod 16384), as CLUSTER KEYSLOT computes it. */
export function hashSlot(key: string): number {
  let bytes = Buffer.from(key, "utf8");
  const open = bytes.indexOf(0x7b); // {
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc & 16383;
}

// Lua: `now` is the server's clock, so instances with skewed clocks agree.
const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// Lua: the epoch of the user's seq counter (KEYS[1]), created with `candidate`
// when missing. The counter also records the replication history
// (master_replid) it was last written under. Replication is asynchronous: a
// replica promoted by a failover, or a restart that reloaded an older
// snapshot, may hold an older counter than the one whose seqs clients have
// already seen, and would hand those seqs out again to other events. Under
// another history the epoch therefore changes, so clients resync instead of
// taking a reissued seq for one they already have (a counter without the
// field, written before this rule, adopts the current history). Without INFO
// (a server that refuses it in scripts) the rule is skipped.
const EPOCH = `
  local function epoch_of(key, candidate)
    local info = redis.pcall('INFO', 'replication')
    local history = false
    if type(info) == 'string' then history = string.match(info, 'master_replid:(%x+)') or false end
    local h = redis.call('HMGET', key, 'epoch', 'r')
    if h[1] and (not history or not h[2] or h[2] == history) then
      if history and not h[2] then redis.call('HSET', key, 'r', history) end
      return h[1]
    end
    redis.call('HSET', key, 'epoch', candidate)
    if history then redis.call('HSET', key, 'r', history) end
    return candidate
  end`;

const SCRIPTS = {
  // KEYS: ticket, used marker. ARGV: used marker ms.
  gwRedeem: {
    keys: 2,
    lua: `
      local v = redis.call('GETDEL', KEYS[1])
      if v then
        redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
        return {'ok', v}
      end
      if redis.call('EXISTS', KEYS[2]) == 1 then return {'used'} end
      return {'unknown'}`,
  },
  // KEYS: accepted ids, claims. ARGV: message id, ttl ms, stale ms. An id is
  // "started" once accepted (for ttl ms, while among the newest kept), "pending"
  // while a hand-off claimed it less than stale ms ago, else claimed here.
  // Claims left by an instance that died mid-hand-off are swept once there
  // are many, so neither key grows without bound.
  gwClaim: {
    keys: 2,
    lua: `
      ${NOW}
      local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
      if at and now - tonumber(at) < tonumber(ARGV[2]) then return 'started' end
      local stale = tonumber(ARGV[3])
      local c = redis.call('HGET', KEYS[2], ARGV[1])
      if c and now - tonumber(c) < stale then return 'pending' end
      if redis.call('HLEN', KEYS[2]) >= 64 then
        local all = redis.call('HGETALL', KEYS[2])
        for i = 1, #all, 2 do
          if now - tonumber(all[i + 1]) >= stale then redis.call('HDEL', KEYS[2], all[i]) end
        end
      end
      redis.call('HSET', KEYS[2], ARGV[1], now)
      redis.call('PEXPIRE', KEYS[2], 2 * stale)
      return 'claimed'`,
  },
  // KEYS: accepted ids, claims. ARGV: message id, ttl ms, max ids kept. The
  // oldest ids beyond the bound, and any older than ttl, are forgotten.
  gwAccept: {
    keys: 2,
    lua: `
      ${NOW}
      redis.call('HDEL', KEYS[2], ARGV[1])
      redis.call('ZADD', KEYS[1], now, ARGV[1])
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
      local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
      if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
      redis.call('PEXPIRE', KEYS[1], ARGV[2])`,
  },
  // KEYS: rate key. ARGV: window ms. The expiry is set whenever missing, so a
  // key can never be left without one.
  gwHit: {
    keys: 1,
    lua: `
      local c = redis.call('INCR', KEYS[1])
      local ttl = redis.call('PTTL', KEYS[1])
      if ttl < 0 then
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        ttl = tonumber(ARGV[1])
      end
      return {c, ttl}`,
  },
  // KEYS: revoked. ARGV: at ms, keep ms. A late, older revocation never undoes a newer one.
  gwRevoke: {
    keys: 1,
    lua: `
      local cur = redis.call('GET', KEYS[1])
      local at = ARGV[1]
      if cur and tonumber(cur) > tonumber(at) then at = cur end
      redis.call('SET', KEYS[1], at, 'PX', ARGV[2])`,
  },
  // KEYS: conns. ARGV: member, max, ttl ms. A member already present is a refresh.
  gwAddConnection: {
    keys: 1,
    lua: `
      ${NOW}
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
      if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
        return 0
      end
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
      if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
      return 1`,
  },
  // KEYS: conns. ARGV: ttl ms, members… A live connection whose entry was lost
  // (expired during an outage, or data loss) is counted again.
  gwRefreshConnections: {
    keys: 1,
    lua: `
      ${NOW}
      local ttl = tonumber(ARGV[1])
      for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
      if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end`,
  },
  // KEYS: seq. ARGV: epoch candidate. Creates the counter (and so fixes the
  // epoch) on first sight, so the epoch a client first sees survives its first event.
  gwHead: {
    keys: 1,
    lua: `
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      return {tonumber(redis.call('HGET', KEYS[1], 'n')) or 0, epoch}`,
  },
  // KEYS: seq, hist, channel. ARGV: epoch candidate, body, max events, ttl ms.
  // SPUBLISH in the script makes seq order and channel order the same; the
  // channel is declared as a key so that a cluster checks it is in the slot
  // of the other two (a sharded channel must be served by the script's node).
  gwPublish: {
    keys: 3,
    lua: `
      ${NOW}
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local ttl = tonumber(ARGV[4])
      redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], '*', 's', n, 'b', ARGV[2])
      redis.call('XTRIM', KEYS[2], 'MINID', now - ttl)
      redis.call('PEXPIRE', KEYS[2], ttl)
      redis.call('SPUBLISH', KEYS[3], n .. ' ' .. epoch .. ' ' .. ARGV[2])
      return {n, epoch}`,
  },
  // KEYS: seq, hist, channel. ARGV: epoch candidate, max events, ttl ms,
  // bodies… The batch form of gwPublish: one round trip for many events of
  // one user, with contiguous seqs, each published on the channel in order.
  gwPublishMany: {
    keys: 3,
    lua: `
      ${NOW}
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      local count = #ARGV - 3
      local last = redis.call('HINCRBY', KEYS[1], 'n', count)
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local first = last - count + 1
      for i = 1, count do
        local n = first + i - 1
        redis.call('XADD', KEYS[2], '*', 's', n, 'b', ARGV[3 + i])
        redis.call('SPUBLISH', KEYS[3], n .. ' ' .. epoch .. ' ' .. ARGV[3 + i])
      end
      local ttl = tonumber(ARGV[3])
      redis.call('XTRIM', KEYS[2], 'MAXLEN', '=', ARGV[2])
      redis.call('XTRIM', KEYS[2], 'MINID', now - ttl)
      redis.call('PEXPIRE', KEYS[2], ttl)
      return {first, epoch}`,
  },
  // KEYS: seq, hist. ARGV: epoch candidate, after seq, max events, ttl ms.
  // The stream is contiguous in seq, so its last k entries are the wanted ones.
  gwReadHistory: {
    keys: 2,
    lua: `
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local n = tonumber(redis.call('HGET', KEYS[1], 'n')) or 0
      local k = n - tonumber(ARGV[2])
      if k <= 0 or k > tonumber(ARGV[3]) then return {n, epoch, {}} end
      ${NOW}
      local oldest = now - tonumber(ARGV[4])
      local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', k)
      local out = {}
      for i = #entries, 1, -1 do
        local e = entries[i]
        if tonumber(string.match(e[1], '^%d+')) >= oldest then
          out[#out + 1] = e[2][2]
          out[#out + 1] = e[2][4]
        end
      end
      return {n, epoch, out}`,
  },
} as const satisfies Record<string, { keys: number; lua: string }>;

type ScriptName = keyof typeof SCRIPTS;
type Arg = string | number;
/** The command connection: one Redis, or the cluster client. */
type Commands = Redis | Cluster;
/** What bounded() needs of a connection. */
type Connection = { readonly status: string; on(event: "ready", listener: () => void): unknown };

/**
 * Runs `send` once `conn` is ready, within `timeoutMs` in all (waiting for a
 * reconnect included), else rejects with StoreUnavailableError. A call that
 * gave up is never sent later: that is why this replaces ioredis' offline queue.
 */
function bounded<T>(conn: Connection, timeoutMs: number, send: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const waiters = readyWaiters(conn);
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      waiters.delete(start);
      reject(err instanceof StoreUnavailableError || err instanceof StoreCommandError ? err : classifyFailure(err));
    };
    const start = () => {
      if (settled) return;
      try {
        send().then((value) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(value);
        }, fail);
      } catch (err) {
        fail(err);
      }
    };
    // Deferred to the check phase: when the event loop itself was stalled past
    // the timeout (a starved CPU), an answer already waiting on the socket is
    // read in the poll phase first, and is not mistaken for an outage.
    const timer = setTimeout(() => setImmediate(() => fail(new Error(`no answer from Redis within ${timeoutMs} ms`))), timeoutMs);
    if (conn.status === "ready") start();
    else if (conn.status === "end") fail(new Error("store closed"));
    else waiters.add(start);
  });
}

/**
 * An error reply from Redis is a bug (WRONGTYPE, a script error), unless it
 * is one of the replies a healthy store gives while it moves or starts (a
 * cluster resharding or failing over, a replica loading): only those, and
 * every connection-level failure, mean "unavailable, retry".
 */
const TRANSIENT_REPLY = /^(MOVED|ASK|CLUSTERDOWN|TRYAGAIN|LOADING|BUSY|MASTERDOWN|READONLY|NOREPLICAS|OOM) /;
function classifyFailure(err: unknown): Error {
  if (err instanceof ReplyError && !TRANSIENT_REPLY.test((err as Error).message)) {
    // The message only (WRONGTYPE …, ERR …): ioredis attaches the command's arguments, which must not reach a log.
    return new StoreCommandError((err as Error).message.split("\n")[0]!.slice(0, 200));
  }
  return new StoreUnavailableError(err);
}

/** A revocation marker that is not a number was not written by us: refuse everything rather than nothing. */
function failClosed(value: string | null): number {
  if (value === null) return 0;
  const at = Number(value);
  return Number.isFinite(at) ? at : Number.MAX_SAFE_INTEGER;
}

const waitersByConnection = new WeakMap<Connection, Set<() => void>>();
function readyWaiters(conn: Connection): Set<() => void> {
  let waiters = waitersByConnection.get(conn);
  if (waiters === undefined) {
    const set = new Set<() => void>();
    waitersByConnection.set(conn, (waiters = set));
    conn.on("ready", () => {
      const due = [...set];
      set.clear();
      for (const start of due) start();
    });
  }
  return waiters;
}

/** Timeouts and queueing shared by every connection, to one Redis or to a cluster node. */
function commonOptions(timeoutMs: number) {
  return {
    connectTimeout: timeoutMs,
    // A backstop only: bounded() answers at timeoutMs, after reading any reply
    // that is already waiting. ioredis's own timer fires before pending I/O is
    // read, so at timeoutMs it would fail a command whose answer had arrived
    // while the process was starved of CPU.
    commandTimeout: Math.max(2 * timeoutMs, 2000),
    // A socket that stops answering (a hung host, a silent network partition)
    // is dropped and reconnected instead of waiting for TCP keepalive.
    socketTimeout: Math.max(2 * timeoutMs, 2000),
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 1,
  } satisfies RedisOptions;
}

const retryStrategy = (times: number) => Math.min(times * 100, 1000);

function urlOptions(url: string, options: RedisStoreOptions, timeoutMs: number): RedisOptions {
  const parsed = new URL(url);
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") throw new Error("the Redis URL must be redis:// or rediss://");
  const db = parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : 0;
  return {
    ...commonOptions(timeoutMs),
    host: parsed.hostname.replace(/^\[|\]$/g, ""),
    port: parsed.port === "" ? 6379 : Number(parsed.port),
    username: options.username ?? (parsed.username === "" ? undefined : decodeURIComponent(parsed.username)),
    password: options.password ?? (parsed.password === "" ? undefined : decodeURIComponent(parsed.password)),
    db: Number.isInteger(db) ? db : 0,
    tls: parsed.protocol === "rediss:" ? (options.tlsCa === undefined ? {} : { ca: options.tlsCa }) : undefined,
    enableOfflineQueue: false, // see bounded()
    retryStrategy,
    // After a failover the old primary answers READONLY until the client reconnects.
    reconnectOnError: (err) => err.message.startsWith("READONLY"),
  };
}

/** Options of every connection to a cluster node (the cluster client's own, and the bus's). */
function clusterNodeOptions(options: RedisStoreOptions, timeoutMs: number) {
  const tls = options.cluster?.tls === true;
  return {
    ...commonOptions(timeoutMs),
    username: options.username,
    password: options.password,
    tls: tls ? (options.tlsCa === undefined ? {} : { ca: options.tlsCa }) : undefined,
  } satisfies RedisOptions;
}

/**
 * Where the bus subscribes a channel: the node serving its slot. One Redis is
 * one node for every channel; a cluster's map is ioredis' slot table, kept
 * fresh by the cluster client.
 */
interface Topology {
  /** The node (its `host:port`) that serves the channel now; undefined while the map is unknown. */
  nodeOf(channel: string): string | undefined;
  /** The nodes that serve slots (the primaries); empty while the map is unknown. */
  nodes(): string[];
  /** Options of a bus connection to the node. */
  connectionOptions(node: string): RedisOptions;
  /** The channels, in batches that one SSUBSCRIBE may carry (a cluster wants one slot per command). */
  batches(channels: string[]): string[][];
  /** Asks for a fresh map; `onChange` handlers run when it arrived. */
  refresh(): void;
  onChange(handler: () => void): void;
  readonly clustered: boolean;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function singleTopology(options: RedisOptions): Topology {
  const node = `${options.host ?? "127.0.0.1"}:${options.port ?? 6379}`;
  return {
    clustered: false,
    nodeOf: () => node,
    nodes: () => [node],
    connectionOptions: () => options,
    batches: (channels) => chunks(channels, SUBSCRIBE_BATCH),
    refresh() {},
    onChange() {},
  };
}

function clusterTopology(cluster: Cluster, nodeOptions: RedisOptions): Topology {
  const handlers: (() => void)[] = [];
  cluster.on("refresh", () => {
    for (const handler of handlers) handler();
  });
  return {
    clustered: true,
    // Both read ioredis' slot table as it is now (it also mends single slots on MOVED), so they always agree.
    nodeOf: (channel) => cluster.slots[hashSlot(channel)]?.[0],
    nodes: () => [...new Set(cluster.slots.map((nodes) => nodes?.[0]).filter((node): node is string => node !== undefined))],
    connectionOptions(node) {
      const at = node.lastIndexOf(":");
      return { ...nodeOptions, host: node.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(node.slice(at + 1)) };
    },
    batches(channels) {
      const bySlot = new Map<number, string[]>();
      for (const channel of channels) {
        const slot = hashSlot(channel);
        const list = bySlot.get(slot);
        if (list === undefined) bySlot.set(slot, [channel]);
        else list.push(channel);
      }
      return [...bySlot.values()].flatMap((list) => chunks(list, SUBSCRIBE_BATCH));
    },
    refresh() {
      if (cluster.status === "ready") cluster.refreshSlotsCache();
    },
    onChange(handler) {
      handlers.push(handler);
    },
  };
}

const isMoved = (err: unknown): boolean => {
  const error = err instanceof StoreUnavailableError ? err.cause : err;
  return error instanceof Error && /^(MOVED|ASK|CLUSTERDOWN|TRYAGAIN) /.test(error.message);
};

export function createRedisStore(options: RedisStoreOptions): Store {
  const timeoutMs = options.commandTimeoutMs ?? 1000;
  const logger = options.logger ?? { warn() {}, info() {} };
  if ((options.url === undefined) === (options.cluster === undefined)) throw new Error("the Redis store takes either url or cluster");

  let cmd: Commands;
  let topology: Topology;
  if (options.cluster !== undefined) {
    if (options.cluster.nodes.length === 0) throw new Error("a Redis Cluster needs at least one node");
    const nodeOptions = clusterNodeOptions(options, timeoutMs);
    const clusterOptions: ClusterOptions = {
      redisOptions: { ...nodeOptions, connectionName: "gw-cmd" },
      enableOfflineQueue: false, // see bounded()
      enableReadyCheck: true,
      enableAutoPipelining: true,
      scaleReads: "master",
      clusterRetryStrategy: retryStrategy,
      slotsRefreshTimeout: timeoutMs,
      slotsRefreshInterval: 5_000,
      // A failover is noticed through the bus (see repair), and a command in
      // flight meets MOVED or a closed connection: a few quick retries, no more.
      maxRedirections: 6,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100,
      // Node addresses as the cluster announces them, unresolved: TLS checks the certificate against them.
      dnsLookup: (address, callback) => callback(null, address),
    };
    const cluster = new Cluster(
      options.cluster.nodes.map((node) => ({ host: node.host, port: node.port })),
      clusterOptions,
    );
    cmd = cluster;
    topology = clusterTopology(cluster, nodeOptions);
  } else {
    const base = urlOptions(options.url!, options, timeoutMs);
    cmd = new Redis({ ...base, enableAutoPipelining: true, connectionName: "gw-cmd" });
    topology = singleTopology(base);
  }
  for (const [name, script] of Object.entries(SCRIPTS)) {
    cmd.defineCommand(name, { lua: script.lua, numberOfKeys: script.keys });
  }

  let closing: Promise<void> | undefined;
  const handlers: ((message: BusMessage) => void)[] = [];
  const statusHandlers: ((up: boolean) => void)[] = [];
  // Up until the first drop: nothing can have been missed before anything was
  // subscribed, so the first connect is no transition worth reporting.
  let busUp = true;

  const closedError = () => new StoreUnavailableError(new Error("store closed"));
  const guard = <T>(send: () => Promise<T>): Promise<T> =>
    closing === undefined ? bounded(cmd, timeoutMs, send) : Promise.reject(closedError());
  const script = (name: ScriptName, ...args: Arg[]): Promise<unknown> =>
    guard(() => (cmd as unknown as Record<ScriptName, (...a: Arg[]) => Promise<unknown>>)[name](...args));
  const newEpoch = () => `${Date.now().toString(36)}-${randomBytes(6).toString("hex")}`;

  // An outage makes ioredis report every failed reconnect: one line per 10 s per connection is enough.
  const watchConnection = (conn: Commands, fields: { connection: string; node?: string }) => {
    let lastLog = 0;
    let suppressed = 0;
    let troubled = false;
    const report = (err: Error & { code?: string }) => {
      troubled = true;
      const now = Date.now();
      if (now - lastLog < RECONNECT_LOG_INTERVAL_MS) {
        suppressed++;
        return;
      }
      logger.warn({ ...fields, err: { message: err.message, code: err.code }, suppressed }, "redis connection problem");
      lastLog = now;
      suppressed = 0;
    };
    conn.on("error", report);
    conn.on("node error", report);
    conn.on("ready", () => {
      if (troubled) logger.info(fields, "redis connection ready");
      troubled = false;
    });
  };
  watchConnection(cmd, { connection: "command" });

  // ── bus ──
  //
  // One subscriber connection per node that serves slots (one in all on a
  // single Redis). What is wanted is `channels`, with the node each channel
  // was last subscribed on; the connections follow it: a connection that
  // becomes ready subscribes all of its node's channels again, and a new
  // cluster map moves the channels whose slot moved. The bus is reported down
  // whenever a subscription may have missed messages (a connection dropped, a
  // slot moved away) and up once every channel is subscribed on the node
  // that serves it: the hub then catches every socket up from history.
  type Route = { readonly kind: "user"; readonly userId: string } | { readonly kind: "instance" };
  /** Channel → what it carries, how many callers want it, and where it is subscribed: the truth a reconnect restores. */
  const channels = new Map<string, { route: Route; refs: number; node: string | undefined }>();
  interface Shard {
    readonly node: string;
    readonly conn: Redis;
    /** Every channel of the node was subscribed since the connection last became ready. */
    synced: boolean;
    /** Counts the connection's drops, so that a sync that outlived its connection counts for nothing. */
    generation: number;
    /** A sync is running; `again`: run once more when it ends (new channels, or a new connection). */
    running: boolean;
    again: boolean;
  }
  const shards = new Map<string, Shard>();

  const safeCall = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      logger.warn({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, "bus handler threw");
    }
  };
  const setBus = (up: boolean) => {
    if (up === busUp || closing !== undefined) return;
    busUp = up;
    for (const handler of statusHandlers) safeCall(() => handler(up));
  };
  /** Up again once every node's connection is ready and has every one of its channels subscribed. */
  const maybeUp = () => {
    if (busUp || shards.size === 0) return;
    for (const shard of shards.values()) if (!shard.synced || shard.conn.status !== "ready") return;
    for (const entry of channels.values()) if (entry.node === undefined || !shards.has(entry.node)) return;
    setBus(true);
  };

  const onMessage = (channel: string, message: string) => {
    const entry = channels.get(channel);
    if (entry === undefined) return; // unsubscribed meanwhile
    const parsed = parseBusMessage(entry.route, message);
    if (parsed === undefined) return;
    for (const handler of handlers) safeCall(() => handler(parsed));
  };

  /**
   * Subscribes every channel of the shard's node (again: SSUBSCRIBE of a
   * subscribed channel is a no-op). One sync runs per shard at a time: `force`
   * (a new connection, channels moved here) makes a running one go round once
   * more; otherwise a running sync is left to finish, however slow.
   */
  const sync = (shard: Shard, force: boolean): void => {
    if (shard.running) {
      if (force) shard.again = true;
      return;
    }
    void runSync(shard);
  };
  const runSync = async (shard: Shard): Promise<void> => {
    shard.running = true;
    try {
      for (;;) {
        shard.again = false;
        if (closing !== undefined || shards.get(shard.node) !== shard || shard.conn.status !== "ready") return;
        const generation = shard.generation;
        shard.synced = false;
        const mine = [...channels].filter(([, entry]) => entry.node === shard.node).map(([channel]) => channel);
        try {
          await Promise.all(
            topology.batches(mine).map((batch) =>
              bounded(shard.conn, timeoutMs, () => {
                const still = batch.filter((channel) => channels.get(channel)?.node === shard.node);
                return still.length > 0 ? shard.conn.ssubscribe(...still) : Promise.resolve(0);
              }),
            ),
          );
        } catch (err) {
          if (generation !== shard.generation || shards.get(shard.node) !== shard || closing !== undefined) {
            if (shard.again) continue;
            return;
          }
          if (isMoved(err)) {
            // The map is out of date: the repair loop reads it again, moves the channels and syncs again.
            topology.refresh();
            return;
          }
          logger.warn({ err: { message: (err as Error).message }, node: shard.node, channels: mine.length }, "bus resubscribe failed; reconnecting");
          shard.conn.disconnect(true);
          return;
        }
        if (shard.again) continue;
        if (generation !== shard.generation) return; // dropped meanwhile: its next "ready" syncs
        shard.synced = true;
        maybeUp();
        return;
      }
    } finally {
      shard.running = false;
    }
  };

  const openShard = (node: string): Shard => {
    const conn = new Redis({
      ...topology.connectionOptions(node),
      enableOfflineQueue: false,
      retryStrategy,
      autoResubscribe: false, // sync() restores the subscriptions, to know when they are back
      connectionName: "gw-bus",
    });
    const shard: Shard = { node, conn, synced: false, generation: 0, running: false, again: false };
    watchConnection(conn, topology.clustered ? { connection: "bus", node } : { connection: "bus" });
    const drop = () => {
      shard.synced = false;
      shard.generation++;
      if (shards.get(node) === shard) setBus(false);
    };
    conn.on("ready", () => sync(shard, true));
    conn.on("close", drop);
    conn.on("end", drop);
    // An SSUBSCRIBE answered MOVED, or the node dropped our channels of a slot
    // it no longer serves (Redis 7 sends an unasked SUNSUBSCRIBE): read the
    // map again; the channels that moved are reported and subscribed there.
    conn.on("moved", () => {
      shard.synced = false;
      topology.refresh();
    });
    conn.on("smessage", onMessage);
    shards.set(node, shard);
    return shard;
  };

  /** Brings the shards and the channels' nodes in line with the current map. */
  const reconcile = () => {
    if (closing !== undefined) return;
    const nodes = topology.nodes();
    if (nodes.length === 0) return; // no map yet
    const wanted = new Set(nodes);
    let lost = false;
    for (const [node, shard] of shards) {
      if (wanted.has(node)) continue;
      shards.delete(node);
      shard.generation++;
      shard.conn.disconnect();
    }
    for (const node of nodes) if (!shards.has(node)) openShard(node);
    const gained = new Set<Shard>();
    for (const [channel, entry] of channels) {
      const node = topology.nodeOf(channel);
      if (node === entry.node) continue;
      // Published to its new node since the slot moved, and not heard here: lost.
      if (entry.node !== undefined) lost = true;
      entry.node = node;
      const shard = node === undefined ? undefined : shards.get(node);
      if (shard) {
        shard.synced = false;
        gained.add(shard);
      }
    }
    if (lost) setBus(false);
    for (const shard of shards.values()) if (!shard.synced && shard.conn.status === "ready") sync(shard, gained.has(shard));
    maybeUp();
  };
  topology.onChange(reconcile);
  reconcile();

  // While anything is out of line, read the cluster map again and repair:
  // after a failover it is how the bus finds the promoted replica.
  const repair = setInterval(() => {
    if (closing !== undefined) return;
    let healthy = busUp;
    for (const shard of shards.values()) if (!shard.synced || shard.conn.status !== "ready") healthy = false;
    if (healthy) return;
    topology.refresh();
    reconcile();
  }, BUS_REPAIR_MS);
  repair.unref();

  // Nothing else is sent on the bus, so a dead socket would go unnoticed: a
  // ping arms socketTimeout, which drops a connection that stopped answering.
  const watchdog = setInterval(() => {
    for (const shard of shards.values()) if (shard.conn.status === "ready") shard.conn.ping().catch(() => {});
  }, BUS_WATCHDOG_MS);
  watchdog.unref();

  /** The shard that serves the channel, waiting (within the deadline) for the cluster map if need be. */
  const shardOf = async (channel: string, deadline: number): Promise<Shard> => {
    if (topology.clustered && topology.nodes().length === 0) {
      await bounded(cmd, Math.max(1, deadline - Date.now()), () => Promise.resolve());
      reconcile();
    }
    const node = topology.nodeOf(channel);
    const shard = node === undefined ? undefined : shards.get(node);
    if (shard === undefined) throw new StoreUnavailableError(new Error("no node serves the channel's slot"));
    return shard;
  };

  // Every subscribe counts, even one that failed: callers release each with
  // one unsubscribe, and what is still wanted is subscribed again when its
  // node's connection is back.
  const subscribeChannel = async (channel: string, route: Route): Promise<void> => {
    if (closing !== undefined) throw closedError();
    const entry = channels.get(channel) ?? { route, refs: 0, node: undefined };
    entry.refs++;
    channels.set(channel, entry);
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      const shard = await shardOf(channel, deadline);
      entry.node ??= shard.node;
      try {
        // Redis ignores a repeated SSUBSCRIBE; one sent after the last release would leak.
        await bounded(shard.conn, Math.max(1, deadline - Date.now()), () =>
          channels.has(channel) ? shard.conn.ssubscribe(channel) : Promise.resolve(0),
        );
        return;
      } catch (err) {
        // A slot that moved since the map was read: read it again, then retry on the new node.
        if (!isMoved(err) || attempt >= 3 || Date.now() >= deadline) throw err;
        await refreshed(deadline);
        reconcile();
      }
    }
  };

  /** Resolves once a fresh cluster map arrived, or at the deadline. */
  const refreshed = (deadline: number) =>
    new Promise<void>((resolve) => {
      if (!(cmd instanceof Cluster)) return resolve();
      const timer = setTimeout(resolve, Math.max(0, Math.min(deadline - Date.now(), timeoutMs)));
      cmd.refreshSlotsCache(() => {
        clearTimeout(timer);
        resolve();
      });
    });

  const store: Store = {
    kind: "redis",

    async putTicket(hash: string, record: TicketRecord, ttlMs: number): Promise<void> {
      await guard(() => cmd.set(redisKeys.ticket(hash), JSON.stringify(record), "PX", ttlMs + TICKET_GRACE_MS));
    },

    async redeemTicket(hash: string): Promise<RedeemOutcome> {
      const reply = (await script("gwRedeem", redisKeys.ticket(hash), redisKeys.ticketUsed(hash), TICKET_USED_MARKER_MS)) as [string, string?];
      if (reply[0] === "ok") return { status: "ok", record: JSON.parse(reply[1] ?? "null") as TicketRecord };
      return { status: reply[0] === "used" ? "used" : "unknown" };
    },

    async hit(key: string, windowMs: number) {
      const [count, resetInMs] = (await script("gwHit", redisKeys.rateLimit(key), windowMs)) as [number, number];
      return { count, resetInMs };
    },

    async revokeUser(userId: string, atMs: number, keepMs: number): Promise<void> {
      await script("gwRevoke", redisKeys.revoked(userId), Math.floor(atMs), keepMs);
    },

    async revokedAt(userId: string): Promise<number> {
      return failClosed(await guard(() => cmd.get(redisKeys.revoked(userId))));
    },

    async revokeTokensBefore(userId: string, notBeforeMs: number, keepMs: number): Promise<void> {
      // The same "later wins" script as a revoke, on a key of its own: it is kept far longer.
      await script("gwRevoke", redisKeys.tokensNotBefore(userId), Math.floor(notBeforeMs), keepMs);
    },

    async tokensNotBefore(userId: string): Promise<number> {
      return failClosed(await guard(() => cmd.get(redisKeys.tokensNotBefore(userId))));
    },

    async addConnection(userId: string, connectionId: string, max: number, ttlMs: number): Promise<boolean> {
      return (await script("gwAddConnection", redisKeys.connections(userId), connectionId, max, ttlMs)) === 1;
    },

    async removeConnection(userId: string, connectionId: string): Promise<void> {
      await guard(() => cmd.zrem(redisKeys.connections(userId), connectionId));
    },

    async refreshConnections(entries, ttlMs: number): Promise<void> {
      const byUser = new Map<string, string[]>();
      for (const { userId, connectionId } of entries) {
        const list = byUser.get(userId);
        if (list === undefined) byUser.set(userId, [connectionId]);
        else list.push(connectionId);
      }
      // One script per user: each user's keys live in their own slot.
      await Promise.all(
        [...byUser].map(([userId, ids]) => script("gwRefreshConnections", redisKeys.connections(userId), ttlMs, ...ids)),
      );
    },

    async claimMessage(userId: string, messageId: string, options: { ttlMs: number; staleMs: number }): Promise<ClaimOutcome> {
      return (await script("gwClaim", redisKeys.messages(userId), redisKeys.messageClaims(userId), messageId, options.ttlMs, options.staleMs)) as ClaimOutcome;
    },

    async markMessageStarted(userId: string, messageId: string, options: { ttlMs: number; maxPerUser: number }): Promise<void> {
      await script("gwAccept", redisKeys.messages(userId), redisKeys.messageClaims(userId), messageId, options.ttlMs, options.maxPerUser);
    },

    async releaseMessage(userId: string, messageId: string): Promise<void> {
      await guard(() => cmd.hdel(redisKeys.messageClaims(userId), messageId));
    },

    async publishEvent(userId: string, event: AgentEventInput, limits: HistoryLimits) {
      const [seq, epoch] = (await script(
        "gwPublish",
        redisKeys.seq(userId),
        redisKeys.history(userId),
        redisKeys.userChannel(userId),
        newEpoch(),
        JSON.stringify(event),
        limits.maxEvents,
        limits.ttlMs,
      )) as [number, string];
      return { seq, epoch };
    },

    async publishEvents(userId: string, events: readonly AgentEventInput[], limits: HistoryLimits) {
      if (events.length === 0) throw new RangeError("publishEvents needs at least one event");
      const [firstSeq, epoch] = (await script(
        "gwPublishMany",
        redisKeys.seq(userId),
        redisKeys.history(userId),
        redisKeys.userChannel(userId),
        newEpoch(),
        limits.maxEvents,
        limits.ttlMs,
        ...events.map((event) => JSON.stringify(event)),
      )) as [number, string];
      return { firstSeq, epoch };
    },

    async head(userId: string): Promise<StreamHead> {
      const [latestSeq, epoch] = (await script("gwHead", redisKeys.seq(userId), newEpoch())) as [number, string];
      return { latestSeq, epoch };
    },

    async readHistory(userId: string, afterSeq: number, limits: HistoryLimits): Promise<HistoryRead> {
      const [latestSeq, epoch, flat] = (await script(
        "gwReadHistory",
        redisKeys.seq(userId),
        redisKeys.history(userId),
        newEpoch(),
        afterSeq,
        limits.maxEvents,
        limits.ttlMs,
      )) as [number, string, string[]];
      const events: StoredEvent[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const seq = Number(flat[i]);
        if (seq > afterSeq) events.push({ seq, body: flat[i + 1] ?? "" });
      }
      return historyRead(latestSeq, epoch, afterSeq, events);
    },

    subscribeUser: (userId: string) => subscribeChannel(redisKeys.userChannel(userId), { kind: "user", userId }),

    async unsubscribeUser(userId: string): Promise<void> {
      // Local state is the truth (a reconnect restores only what is wanted),
      // so an unsubscribe cannot fail: an SUNSUBSCRIBE that does not arrive is moot.
      const channel = redisKeys.userChannel(userId);
      const entry = channels.get(channel);
      if (entry === undefined || --entry.refs > 0) return;
      channels.delete(channel);
      const shard = entry.node === undefined ? undefined : shards.get(entry.node);
      if (shard?.conn.status === "ready") await bounded(shard.conn, timeoutMs, () => shard.conn.sunsubscribe(channel)).catch(() => {});
    },

    async publishUserControl(userId: string, payload: string): Promise<number> {
      // SPUBLISH counts the subscribers on the channel's primary, where every instance subscribes.
      return Number(await guard(() => cmd.spublish(redisKeys.userChannel(userId), `c ${payload}`)));
    },

    subscribeInstance: (instanceId: string) => subscribeChannel(redisKeys.instanceChannel(instanceId), { kind: "instance" }),

    async publishInstance(instanceId: string, payload: string): Promise<void> {
      await guard(() => cmd.spublish(redisKeys.instanceChannel(instanceId), payload));
    },

    onMessage(handler) {
      handlers.push(handler);
    },

    onBusStatus(handler) {
      statusHandlers.push(handler);
    },

    async check() {
      const ping = (conn: Connection & { ping(): Promise<string> }) =>
        bounded(conn, timeoutMs, () => conn.ping()).then(() => true, () => false);
      // On a cluster every primary must answer: one that does not serves some users no longer.
      const commandNodes = cmd instanceof Cluster ? (cmd.status === "ready" ? cmd.nodes("master") : []) : [cmd];
      const [storeOks, busOks] = await Promise.all([
        Promise.all(
          commandNodes.map((node) =>
            cmd instanceof Cluster
              ? withTimeout(node.ping(), timeoutMs).then(() => true, () => false) // lazily connected: ping connects
              : ping(node),
          ),
        ),
        Promise.all([...shards.values()].map((shard) => ping(shard.conn))),
      ]);
      return {
        store: commandNodes.length > 0 && storeOks.every(Boolean),
        bus: busOks.length > 0 && busOks.every(Boolean) && busUp,
      };
    },

    close(): Promise<void> {
      closing ??= (async () => {
        clearInterval(watchdog);
        clearInterval(repair);
        await Promise.all([cmd, ...[...shards.values()].map((shard) => shard.conn)].map((conn) => closeConnection(conn, timeoutMs)));
      })();
      return closing;
    },
  };
  return store;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

async function closeConnection(conn: Commands, timeoutMs: number): Promise<void> {
  if (conn.status === "ready") {
    try {
      await bounded(conn, timeoutMs, () => conn.quit());
      return;
    } catch {
      // fall through: QUIT had no answer
    }
  }
  conn.disconnect();
}

/** `${seq} ${epoch} ${body}` is an event; `c ${payload}` a control message. */
function parseBusMessage(route: { kind: "user"; userId: string } | { kind: "instance" }, message: string): BusMessage | undefined {
  if (route.kind === "instance") return { kind: "instance_control", payload: message };
  if (message.startsWith("c ")) return { kind: "user_control", userId: route.userId, payload: message.slice(2) };
  const i = message.indexOf(" ");
  const j = message.indexOf(" ", i + 1);
  const seq = Number(message.slice(0, i));
  if (i <= 0 || j < 0 || !Number.isSafeInteger(seq)) return undefined;
  return { kind: "event", userId: route.userId, epoch: message.slice(i + 1, j), event: { seq, body: message.slice(j + 1) } };
}

function historyRead(latestSeq: number, epoch: string, afterSeq: number, events: StoredEvent[]): HistoryRead {
  const complete =
    afterSeq <= latestSeq &&
    events.length === latestSeq - afterSeq &&
    events.every((event, i) => event.seq === afterSeq + 1 + i);
  return { latestSeq, epoch, events, complete };
}
