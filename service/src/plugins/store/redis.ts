/**
 * The production Store: Redis (Memorystore), shared by every gateway instance.
 *
 * Two connections: commands, and the bus (SUBSCRIBE). A call waits at most
 * `commandTimeoutMs` in all, for a reconnect included, then rejects with
 * StoreUnavailableError. Nothing is queued inside ioredis (no offline queue,
 * no resend of unanswered commands): a call sent after its caller was told it
 * failed could, for publishEvent, give a seq to an event reported as lost.
 * Each multi-key step is one Lua script on keys of one hash tag.
 */
import { randomBytes } from "node:crypto";
import { Redis, type RedisOptions } from "ioredis";
import {
  StoreUnavailableError,
  type AgentEventInput,
  type BusMessage,
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

export interface RedisStoreOptions {
  /** `redis://` or `rediss://` (TLS). */
  readonly url: string;
  /** Overrides a password in the URL. */
  readonly password?: string;
  /** PEM of the CA that signed the server's certificate (`rediss://` only). */
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
  message: (userId: string, messageId: string) => `${user(userId)}:msg:${encodeId(messageId)}`,
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

// Lua: `now` is the server's clock, so instances with skewed clocks agree.
const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

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
      redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local h = redis.call('HMGET', KEYS[1], 'n', 'epoch')
      return {tonumber(h[1]) or 0, h[2]}`,
  },
  // KEYS: seq, hist. ARGV: epoch candidate, body, max events, ttl ms, channel.
  // PUBLISH in the script makes seq order and channel order the same.
  gwPublish: {
    keys: 2,
    lua: `
      ${NOW}
      local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
      redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
      local epoch = redis.call('HGET', KEYS[1], 'epoch')
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local ttl = tonumber(ARGV[4])
      redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], '*', 's', n, 'b', ARGV[2])
      redis.call('XTRIM', KEYS[2], 'MINID', now - ttl)
      redis.call('PEXPIRE', KEYS[2], ttl)
      redis.call('PUBLISH', ARGV[5], n .. ' ' .. epoch .. ' ' .. ARGV[2])
      return {n, epoch}`,
  },
  // KEYS: seq, hist. ARGV: epoch candidate, after seq, max events, ttl ms.
  // The stream is contiguous in seq, so its last k entries are the wanted ones.
  gwReadHistory: {
    keys: 2,
    lua: `
      redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local h = redis.call('HMGET', KEYS[1], 'n', 'epoch')
      local n = tonumber(h[1]) or 0
      local k = n - tonumber(ARGV[2])
      if k <= 0 or k > tonumber(ARGV[3]) then return {n, h[2], {}} end
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
      return {n, h[2], out}`,
  },
} as const satisfies Record<string, { keys: number; lua: string }>;

type ScriptName = keyof typeof SCRIPTS;
type Arg = string | number;

/**
 * Runs `send` once `conn` is ready, within `timeoutMs` in all (waiting for a
 * reconnect included), else rejects with StoreUnavailableError. A call that
 * gave up is never sent later: that is why this replaces ioredis' offline queue.
 */
function bounded<T>(conn: Redis, timeoutMs: number, send: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const waiters = readyWaiters(conn);
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      waiters.delete(start);
      reject(err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err));
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
    const timer = setTimeout(() => fail(new Error(`no answer from Redis within ${timeoutMs} ms`)), timeoutMs);
    if (conn.status === "ready") start();
    else if (conn.status === "end") fail(new Error("store closed"));
    else waiters.add(start);
  });
}

const waitersByConnection = new WeakMap<Redis, Set<() => void>>();
function readyWaiters(conn: Redis): Set<() => void> {
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

function connectionOptions(options: RedisStoreOptions, timeoutMs: number): RedisOptions {
  const url = new URL(options.url);
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") throw new Error("the Redis URL must be redis:// or rediss://");
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  return {
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port: url.port === "" ? 6379 : Number(url.port),
    username: url.username === "" ? undefined : decodeURIComponent(url.username),
    password: options.password ?? (url.password === "" ? undefined : decodeURIComponent(url.password)),
    db: Number.isInteger(db) ? db : 0,
    tls: url.protocol === "rediss:" ? (options.tlsCa === undefined ? {} : { ca: options.tlsCa }) : undefined,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    // A socket that stops answering (a hung host, a silent network partition)
    // is dropped and reconnected instead of waiting for TCP keepalive.
    socketTimeout: Math.max(2 * timeoutMs, 2000),
    enableOfflineQueue: false, // see bounded()
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(times * 100, 1000),
    // After a failover the old primary answers READONLY until the client reconnects.
    reconnectOnError: (err) => err.message.startsWith("READONLY"),
  };
}

export function createRedisStore(options: RedisStoreOptions): Store {
  const timeoutMs = options.commandTimeoutMs ?? 1000;
  const logger = options.logger ?? { warn() {}, info() {} };
  const base = connectionOptions(options, timeoutMs);

  const cmd = new Redis({ ...base, enableAutoPipelining: true, connectionName: "gw-cmd" });
  // The bus restores its own subscriptions (see resubscribe) to know when they are back.
  const sub = new Redis({ ...base, autoResubscribe: false, connectionName: "gw-bus" });
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

  // An outage makes ioredis report every failed reconnect: one line per 10 s is enough.
  const watchConnection = (conn: Redis, name: string) => {
    let lastLog = 0;
    let suppressed = 0;
    let troubled = false;
    conn.on("error", (err: Error & { code?: string }) => {
      troubled = true;
      const now = Date.now();
      if (now - lastLog < RECONNECT_LOG_INTERVAL_MS) {
        suppressed++;
        return;
      }
      logger.warn({ connection: name, err: { message: err.message, code: err.code }, suppressed }, "redis connection problem");
      lastLog = now;
      suppressed = 0;
    });
    conn.on("ready", () => {
      if (troubled) logger.info({ connection: name }, "redis connection ready");
      troubled = false;
    });
  };
  watchConnection(cmd, "command");
  watchConnection(sub, "bus");

  // ── bus ──
  type Route = { readonly kind: "user"; readonly userId: string } | { readonly kind: "instance" };
  /** Channel → what it carries and how many callers want it: the truth a reconnect restores. */
  const channels = new Map<string, { route: Route; refs: number }>();

  const setBus = (up: boolean) => {
    if (up === busUp || closing !== undefined) return;
    busUp = up;
    for (const handler of statusHandlers) safeCall(() => handler(up));
  };
  const safeCall = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      logger.warn({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, "bus handler threw");
    }
  };

  const resubscribe = async () => {
    const wanted = [...channels.keys()];
    try {
      if (wanted.length > 0) await bounded(sub, timeoutMs, () => sub.subscribe(...wanted));
      setBus(true);
    } catch (err) {
      logger.warn({ err: { message: (err as Error).message }, channels: wanted.length }, "bus resubscribe failed; reconnecting");
      sub.disconnect(true);
    }
  };
  sub.on("ready", () => void resubscribe());
  sub.on("close", () => setBus(false));
  sub.on("end", () => setBus(false));
  sub.on("message", (channel: string, message: string) => {
    const entry = channels.get(channel);
    if (entry === undefined) return; // unsubscribed meanwhile
    const parsed = parseBusMessage(entry.route, message);
    if (parsed === undefined) return;
    for (const handler of handlers) safeCall(() => handler(parsed));
  });
  // Nothing else is sent on the bus, so a dead socket would go unnoticed: a
  // ping arms socketTimeout, which drops a connection that stopped answering.
  const watchdog = setInterval(() => {
    if (sub.status === "ready") sub.ping().catch(() => {});
  }, BUS_WATCHDOG_MS);
  watchdog.unref();

  // Every subscribe counts, even one that failed: callers release each with
  // one unsubscribe, and what is still wanted is subscribed again on reconnect.
  const subscribeChannel = async (channel: string, route: Route): Promise<void> => {
    if (closing !== undefined) throw closedError();
    const entry = channels.get(channel) ?? { route, refs: 0 };
    entry.refs++;
    channels.set(channel, entry);
    // Redis ignores a repeated SUBSCRIBE; one sent after the last release would leak.
    await bounded(sub, timeoutMs, () => (channels.has(channel) ? sub.subscribe(channel) : Promise.resolve(0)));
  };

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
      const value = await guard(() => cmd.get(redisKeys.revoked(userId)));
      return value === null ? 0 : Number(value);
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

    async claimMessage(userId: string, messageId: string, ttlMs: number): Promise<boolean> {
      return (await guard(() => cmd.set(redisKeys.message(userId, messageId), "1", "PX", ttlMs, "NX"))) === "OK";
    },

    async publishEvent(userId: string, event: AgentEventInput, limits: HistoryLimits) {
      const [seq, epoch] = (await script(
        "gwPublish",
        redisKeys.seq(userId),
        redisKeys.history(userId),
        newEpoch(),
        JSON.stringify(event),
        limits.maxEvents,
        limits.ttlMs,
        redisKeys.userChannel(userId),
      )) as [number, string];
      return { seq, epoch };
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
      // so an unsubscribe cannot fail: an UNSUBSCRIBE that does not arrive is moot.
      const channel = redisKeys.userChannel(userId);
      const entry = channels.get(channel);
      if (entry === undefined || --entry.refs > 0) return;
      channels.delete(channel);
      if (sub.status === "ready") await bounded(sub, timeoutMs, () => sub.unsubscribe(channel)).catch(() => {});
    },

    async publishUserControl(userId: string, payload: string): Promise<number> {
      return guard(() => cmd.publish(redisKeys.userChannel(userId), `c ${payload}`));
    },

    subscribeInstance: (instanceId: string) => subscribeChannel(redisKeys.instanceChannel(instanceId), { kind: "instance" }),

    async publishInstance(instanceId: string, payload: string): Promise<void> {
      await guard(() => cmd.publish(redisKeys.instanceChannel(instanceId), payload));
    },

    onMessage(handler) {
      handlers.push(handler);
    },

    onBusStatus(handler) {
      statusHandlers.push(handler);
    },

    async check() {
      const ping = (conn: Redis) => bounded(conn, timeoutMs, () => conn.ping()).then(() => true, () => false);
      const [storeOk, busOk] = await Promise.all([ping(cmd), ping(sub)]);
      return { store: storeOk, bus: busOk && busUp };
    },

    close(): Promise<void> {
      closing ??= (async () => {
        clearInterval(watchdog);
        await Promise.all([cmd, sub].map((conn) => closeConnection(conn, timeoutMs)));
      })();
      return closing;
    },
  };
  return store;
}

async function closeConnection(conn: Redis, timeoutMs: number): Promise<void> {
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
