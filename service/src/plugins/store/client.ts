/**
 * Connections to Redis: their options (timeouts, TLS, ACL user), the rule
 * that bounds every call in time (bounded), which failures mean "unavailable,
 * retry" and which are bugs, and throttled logging of connection trouble.
 *
 * Nothing is queued inside ioredis while it is down (no offline queue, no
 * resend of unanswered commands): a call sent after its caller was told it
 * failed could, for publishEvent, give a seq to an event reported as lost.
 */
import type { EventEmitter } from "node:events";
import { Cluster, Redis, ReplyError, type ClusterOptions, type RedisOptions } from "ioredis";
import { StoreCommandError, StoreUnavailableError } from "./types.js";

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


/** The command connection: one Redis, or the cluster client. */
export type Commands = Redis | Cluster;
/** What bounded() needs of a connection. */
export type Connection = { readonly status: string; on(event: "ready", listener: () => void): unknown };

const RECONNECT_LOG_INTERVAL_MS = 10_000;

/**
 * Runs `send` once `conn` is ready, within `timeoutMs` in all (waiting for a
 * reconnect included), else rejects with StoreUnavailableError. A call that
 * gave up is never sent later: that is why this replaces ioredis' offline queue.
 */
export function bounded<T>(conn: Connection, timeoutMs: number, send: () => Promise<T>): Promise<T> {
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

export const retryStrategy = (times: number) => Math.min(times * 100, 1000);

export function urlOptions(url: string, options: RedisStoreOptions, timeoutMs: number): RedisOptions {
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
export function clusterNodeOptions(options: RedisStoreOptions, timeoutMs: number) {
  const tls = options.cluster?.tls === true;
  return {
    ...commonOptions(timeoutMs),
    username: options.username,
    password: options.password,
    tls: tls ? (options.tlsCa === undefined ? {} : { ca: options.tlsCa }) : undefined,
  } satisfies RedisOptions;
}


/** An SSUBSCRIBE or command that met a slot in motion: the cluster map is out of date. */
export function isMoved(err: unknown): boolean {
  const error = err instanceof StoreUnavailableError ? err.cause : err;
  return error instanceof Error && /^(MOVED|ASK|CLUSTERDOWN|TRYAGAIN) /.test(error.message);
}

/** The cluster client for commands; it routes each command to the primary of its key's slot. */
export function createClusterClient(nodes: readonly RedisClusterNode[], nodeOptions: RedisOptions, timeoutMs: number): Cluster {
  const clusterOptions: ClusterOptions = {
    redisOptions: { ...nodeOptions, connectionName: "gw-cmd" },
    enableOfflineQueue: false, // see bounded()
    enableReadyCheck: true,
    enableAutoPipelining: true,
    scaleReads: "master",
    clusterRetryStrategy: retryStrategy,
    slotsRefreshTimeout: timeoutMs,
    slotsRefreshInterval: 5_000,
    // A failover is noticed through the bus (see ShardedBus' repair), and a command in
    // flight meets MOVED or a closed connection: a few quick retries, no more.
    maxRedirections: 6,
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    // Node addresses as the cluster announces them, unresolved: TLS checks the certificate against them.
    dnsLookup: (address, callback) => callback(null, address),
  };
  return new Cluster(
    nodes.map((node) => ({ host: node.host, port: node.port })),
    clusterOptions,
  );
}

/** An outage makes ioredis report every failed reconnect: one line per 10 s per connection is enough. */
export function watchConnection(
  conn: EventEmitter,
  logger: StoreLogger,
  fields: { connection: string; node?: string },
): void {
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
}

export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
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

/** QUIT when the connection answers, else drop it. */
export async function closeConnection(
  conn: Connection & { quit(): Promise<unknown>; disconnect(): void },
  timeoutMs: number,
): Promise<void> {
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
