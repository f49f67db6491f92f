/**
 * The production Store: one Redis (Memorystore for Redis) or a Redis Cluster
 * (Memorystore for Redis Cluster), shared by every gateway instance. The
 * choice is configuration only: the keys, the scripts and the bus are the
 * same on both.
 *
 * Commands go over one connection (a `Cluster` client on a cluster, which
 * routes each command to the primary of its key's slot). A call waits at most
 * `commandTimeoutMs` in all, for a reconnect included, then rejects with
 * StoreUnavailableError (client.ts says why nothing is queued meanwhile).
 *
 * The modules: keys.ts (key names, hash slots), scripts.ts (the Lua),
 * client.ts (connections and time bounds), topology.ts (which node serves
 * a channel), shardedBus.ts (the pub/sub bus), codec.ts (bus message framing),
 * rules.ts (what the memory store shares); this file is the Store's methods.
 */
import { Cluster, Redis } from "ioredis";
import {
  bounded,
  closeConnection,
  clusterNodeOptions,
  createClusterClient,
  urlOptions,
  watchConnection,
  withTimeout,
  type Commands,
  type RedisStoreOptions,
  type StoreLogger,
} from "./client.js";
import { encodeUserControl } from "./codec.js";
import { admissionTicketKeys, admissionTicketValue, redisKeys } from "./keys.js";
import { asPlainStore, historyRead, newEpoch, TICKET_GRACE_MS, TICKET_USED_MARKER_MS } from "./rules.js";
import { SCRIPTS, type ScriptName } from "./scripts.js";
import { ShardedBus } from "./shardedBus.js";
import { clusterTopology, singleTopology, type Topology } from "./topology.js";
import {
  StoreUnavailableError,
  type AdmitOutcome,
  type AdmitRefusal,
  type AdmitRequest,
  type AgentEventInput,
  type BusMessage,
  type ClaimOutcome,
  type HistoryLimits,
  type HistoryRead,
  type IssueOutcome,
  type StoredEvent,
  type Store,
  type StreamHead,
  type TicketIssueRules,
  type TicketKey,
  type TicketRecord,
} from "./types.js";

export type { RedisClusterNode, RedisStoreOptions, StoreLogger } from "./client.js";
// Where tests and drills have always found them.
export { hashSlot, keyPatterns, redisKeys } from "./keys.js";

type Arg = string | number;

/** A revocation marker that is not a number was not written by us: refuse everything rather than nothing. */
function failClosed(value: string | null): number {
  if (value === null) return 0;
  const at = Number(value);
  return Number.isFinite(at) ? at : Number.MAX_SAFE_INTEGER;
}

/** The command connection and the topology the bus follows, for one Redis or a cluster. */
function connect(options: RedisStoreOptions, timeoutMs: number): { cmd: Commands; topology: Topology } {
  if (options.cluster !== undefined) {
    if (options.cluster.nodes.length === 0) throw new Error("a Redis Cluster needs at least one node");
    const nodeOptions = clusterNodeOptions(options, timeoutMs);
    const cluster = createClusterClient(options.cluster.nodes, nodeOptions, timeoutMs);
    return { cmd: cluster, topology: clusterTopology(cluster, nodeOptions) };
  }
  const base = urlOptions(options.url!, options, timeoutMs);
  return { cmd: new Redis({ ...base, enableAutoPipelining: true, connectionName: "gw-cmd" }), topology: singleTopology(base) };
}

export function createRedisStore(options: RedisStoreOptions): Store {
  const timeoutMs = options.commandTimeoutMs ?? 1000;
  const logger = options.logger ?? { warn() {}, info() {} };
  if ((options.url === undefined) === (options.cluster === undefined)) throw new Error("the Redis store takes either url or cluster");
  const { cmd, topology } = connect(options, timeoutMs);
  for (const [name, script] of Object.entries(SCRIPTS)) {
    cmd.defineCommand(name, { lua: script.lua, numberOfKeys: script.keys });
  }
  watchConnection(cmd, logger, { connection: "command" });
  const bus = new ShardedBus({
    topology,
    timeoutMs,
    logger,
    onConnection: (conn, node) => watchConnection(conn, logger, topology.clustered ? { connection: "bus", node } : { connection: "bus" }),
  });
  return asPlainStore(new RedisStore(cmd, bus, timeoutMs));
}

class RedisStore implements Store {
  readonly kind = "redis";
  private closing: Promise<void> | undefined;

  constructor(
    private readonly cmd: Commands,
    private readonly bus: ShardedBus,
    private readonly timeoutMs: number,
  ) {}

  /**
   * One round trip: gwIssueTicket counts, checks and writes on the user's
   * slot. On a cluster whose ticket keys are not in their user's slot the
   * ticket is written by a second command, after the script allowed it.
   */
  async issueTicket(key: TicketKey, record: TicketRecord, ttlMs: number, rules: TicketIssueRules): Promise<IssueOutcome> {
    // The ticket key carries its user's slot tag (admissionTicketKeys), so the
    // counter, the marker and the ticket are one slot: one script, one round trip.
    const [ticketKey] = admissionTicketKeys(key.slot, key.hash);
    const value = admissionTicketValue(record);
    const reply = (await this.script(
      "gwIssueTicket",
      redisKeys.ticketRate(record.sub),
      redisKeys.tokensNotBefore(record.sub),
      ticketKey,
      rules.windowMs,
      rules.perUser,
      rules.tokenIssuedAt ?? -1,
      value,
      ttlMs + TICKET_GRACE_MS,
    )) as [string, number?];
    if (reply[0] === "limited") return { status: "rate_limited", resetInMs: Number(reply[1]) };
    if (reply[0] === "revoked") return { status: "token_revoked" };
    return { status: "issued" };
  }

  async admit(request: AdmitRequest): Promise<AdmitOutcome> {
    const reply = (await this.script(
      "gwAdmit",
      ...admissionTicketKeys(request.ticket.slot, request.ticket.hash),
      TICKET_USED_MARKER_MS,
      Math.floor(request.nowMs),
      request.origin === null ? "0" : "1",
      request.origin ?? "",
      request.connectionId,
      request.maxConnections,
      request.connectionTtlMs,
      newEpoch(),
    )) as [string, string?, number?, string?];
    const [status, json, latestSeq, epoch] = reply;
    if (status === "ok") {
      return { status: "admitted", record: JSON.parse(json ?? "null") as TicketRecord, head: { latestSeq: latestSeq ?? 0, epoch: epoch ?? "" } };
    }
    if (status === "used" || status === "unknown") return { status };
    return { status: "refused", reason: status as AdmitRefusal };
  }

  async addHits(key: string, hits: number, windowMs: number) {
    const [count, resetInMs] = (await this.script("gwAddHits", redisKeys.rateLimit(key), hits, windowMs)) as [number, number];
    return { count, resetInMs };
  }

  hit(key: string, windowMs: number) {
    return this.addHits(key, 1, windowMs);
  }

  async revokeUser(userId: string, atMs: number, keepMs: number): Promise<void> {
    await this.script("gwRevoke", redisKeys.revoked(userId), Math.floor(atMs), keepMs);
  }

  async revokedAt(userId: string): Promise<number> {
    return failClosed(await this.guard(() => this.cmd.get(redisKeys.revoked(userId))));
  }

  async revokeTokensBefore(userId: string, notBeforeMs: number, keepMs: number): Promise<void> {
    // The same "later wins" script as a revoke, on a key of its own: it is kept far longer.
    await this.script("gwRevoke", redisKeys.tokensNotBefore(userId), Math.floor(notBeforeMs), keepMs);
  }

  async tokensNotBefore(userId: string): Promise<number> {
    return failClosed(await this.guard(() => this.cmd.get(redisKeys.tokensNotBefore(userId))));
  }

  async addConnection(userId: string, connectionId: string, max: number, ttlMs: number): Promise<boolean> {
    return (await this.script("gwAddConnection", redisKeys.connections(userId), connectionId, max, ttlMs)) === 1;
  }

  async removeConnection(userId: string, connectionId: string): Promise<void> {
    await this.guard(() => this.cmd.zrem(redisKeys.connections(userId), connectionId));
  }

  async refreshConnections(entries: readonly { userId: string; connectionId: string }[], ttlMs: number): Promise<void> {
    const byUser = new Map<string, string[]>();
    for (const { userId, connectionId } of entries) {
      const list = byUser.get(userId);
      if (list === undefined) byUser.set(userId, [connectionId]);
      else list.push(connectionId);
    }
    // One script per user: each user's keys live in their own slot.
    await Promise.all(
      [...byUser].map(([userId, ids]) => this.script("gwRefreshConnections", redisKeys.connections(userId), ttlMs, ...ids)),
    );
  }

  async claimMessage(userId: string, messageId: string, options: { ttlMs: number; staleMs: number }): Promise<ClaimOutcome> {
    return (await this.script("gwClaim", redisKeys.messages(userId), redisKeys.messageClaims(userId), messageId, options.ttlMs, options.staleMs)) as ClaimOutcome;
  }

  async markMessageStarted(userId: string, messageId: string, options: { ttlMs: number; maxPerUser: number }): Promise<void> {
    await this.script("gwAccept", redisKeys.messages(userId), redisKeys.messageClaims(userId), messageId, options.ttlMs, options.maxPerUser);
  }

  async releaseMessage(userId: string, messageId: string): Promise<void> {
    await this.guard(() => this.cmd.hdel(redisKeys.messageClaims(userId), messageId));
  }

  async publishEvent(userId: string, event: AgentEventInput, limits: HistoryLimits) {
    const [seq, epoch] = (await this.script(
      "gwPublish",
      ...this.streamKeys(userId),
      newEpoch(),
      JSON.stringify(event),
      limits.maxEvents,
      limits.ttlMs,
    )) as [number, string];
    return { seq, epoch };
  }

  async publishEvents(userId: string, events: readonly AgentEventInput[], limits: HistoryLimits) {
    if (events.length === 0) throw new RangeError("publishEvents needs at least one event");
    const [firstSeq, epoch] = (await this.script(
      "gwPublishMany",
      ...this.streamKeys(userId),
      newEpoch(),
      limits.maxEvents,
      limits.ttlMs,
      ...events.map((event) => JSON.stringify(event)),
    )) as [number, string];
    return { firstSeq, epoch };
  }

  async head(userId: string): Promise<StreamHead> {
    const [latestSeq, epoch] = (await this.script("gwHead", redisKeys.seq(userId), newEpoch())) as [number, string];
    return { latestSeq, epoch };
  }

  async userState(userId: string): Promise<{ head: StreamHead; revokedAt: number }> {
    const [latestSeq, epoch, revoked] = (await this.script("gwUserState", redisKeys.seq(userId), redisKeys.revoked(userId), newEpoch())) as [
      number,
      string,
      string | null,
    ];
    return { head: { latestSeq, epoch }, revokedAt: failClosed(revoked) };
  }

  async readHistory(userId: string, afterSeq: number, limits: HistoryLimits): Promise<HistoryRead> {
    const [latestSeq, epoch, flat] = (await this.script(
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
  }

  subscribeUser(userId: string): Promise<void> {
    return this.bus.subscribe(redisKeys.userChannel(userId), { kind: "user", userId });
  }

  unsubscribeUser(userId: string): Promise<void> {
    return this.bus.unsubscribe(redisKeys.userChannel(userId));
  }

  async publishUserControl(userId: string, payload: string): Promise<number> {
    // SPUBLISH counts the subscribers on the channel's primary, where every instance subscribes.
    return Number(await this.guard(() => this.cmd.spublish(redisKeys.userChannel(userId), encodeUserControl(payload))));
  }

  subscribeInstance(instanceId: string): Promise<void> {
    return this.bus.subscribe(redisKeys.instanceChannel(instanceId), { kind: "instance" });
  }

  async publishInstance(instanceId: string, payload: string): Promise<void> {
    await this.guard(() => this.cmd.spublish(redisKeys.instanceChannel(instanceId), payload));
  }

  onMessage(handler: (message: BusMessage) => void): void {
    this.bus.onMessage(handler);
  }

  onBusStatus(handler: (up: boolean) => void): void {
    this.bus.onStatus(handler);
  }

  async check(): Promise<{ store: boolean; bus: boolean }> {
    const cmd = this.cmd;
    // On a cluster every primary must answer: one that does not serves some users no longer.
    const commandNodes = cmd instanceof Cluster ? (cmd.status === "ready" ? cmd.nodes("master") : []) : [cmd];
    const [storeOks, busOks] = await Promise.all([
      Promise.all(
        commandNodes.map((node) =>
          cmd instanceof Cluster
            ? withTimeout(node.ping(), this.timeoutMs).then(() => true, () => false) // lazily connected: ping connects
            : bounded(node, this.timeoutMs, () => node.ping()).then(() => true, () => false),
        ),
      ),
      this.bus.ping(),
    ]);
    return {
      store: commandNodes.length > 0 && storeOks.every(Boolean),
      bus: busOks.length > 0 && busOks.every(Boolean) && this.bus.up,
    };
  }

  close(): Promise<void> {
    this.closing ??= Promise.all([closeConnection(this.cmd, this.timeoutMs), this.bus.close()]).then(() => {});
    return this.closing;
  }

  /** The seq counter, history and channel of a user: the keys of both publish scripts, in their order. */
  private streamKeys(userId: string): [string, string, string] {
    return [redisKeys.seq(userId), redisKeys.history(userId), redisKeys.userChannel(userId)];
  }

  private guard<T>(send: () => Promise<T>): Promise<T> {
    return this.closing === undefined
      ? bounded(this.cmd, this.timeoutMs, send)
      : Promise.reject(new StoreUnavailableError(new Error("store closed")));
  }

  private script(name: ScriptName, ...args: Arg[]): Promise<unknown> {
    return this.guard(() => (this.cmd as unknown as Record<ScriptName, (...a: Arg[]) => Promise<unknown>>)[name](...args));
  }
}
