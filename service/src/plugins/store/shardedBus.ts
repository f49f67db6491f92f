/**
 * The bus: sharded pub/sub (SSUBSCRIBE / SPUBLISH, Redis 7) over one
 * subscriber connection per node that serves slots (one in all on a single
 * Redis).
 *
 * What is wanted is `channels`, with the node each channel was last
 * subscribed on; the connections follow it: a connection that becomes ready
 * subscribes all of its node's channels again, and a new cluster map moves
 * the channels whose slot moved. The bus is reported down whenever a
 * subscription may have missed messages (a connection dropped, a slot moved
 * away) and up once every channel is subscribed on the node that serves it:
 * the hub then catches every socket up from history.
 */
import { bounded, closeConnection, isMoved, type StoreLogger } from "./client.js";
import { decodeBusMessage, type BusRoute } from "./codec.js";
import type { BusConnection, Topology } from "./topology.js";
import { StoreUnavailableError, type BusMessage } from "./types.js";

export interface ShardedBusOptions {
  readonly topology: Topology;
  /** Every call on a bus connection waits at most this long. */
  readonly timeoutMs: number;
  readonly logger: StoreLogger;
  /** Called with each new connection (the store throttles its error logging). */
  readonly onConnection?: (conn: BusConnection, node: string) => void;
  /** While part of the bus is down or out of date, how often the map is re-read and the bus repaired. Default 500. */
  readonly repairMs?: number;
  /** How often each connection is pinged, so that a dead socket is noticed. Default 5000. */
  readonly watchdogMs?: number;
}

interface Shard {
  readonly node: string;
  readonly conn: BusConnection;
  /** Every channel of the node was subscribed since the connection last became ready. */
  synced: boolean;
  /** Counts the connection's drops, so that a sync that outlived its connection counts for nothing. */
  generation: number;
  /** A sync is running; `again`: run once more when it ends (new channels, or a new connection). */
  running: boolean;
  again: boolean;
}

/** Channel → what it carries, how many callers want it, and where it is subscribed: the truth a reconnect restores. */
interface Wanted {
  readonly route: BusRoute;
  refs: number;
  node: string | undefined;
}

const closedError = () => new StoreUnavailableError(new Error("store closed"));

export class ShardedBus {
  private readonly channels = new Map<string, Wanted>();
  private readonly shards = new Map<string, Shard>();
  private readonly handlers: ((message: BusMessage) => void)[] = [];
  private readonly statusHandlers: ((up: boolean) => void)[] = [];
  // Up until the first drop: nothing can have been missed before anything was
  // subscribed, so the first connect is no transition worth reporting.
  private busUp = true;
  private closing: Promise<void> | undefined;
  private readonly repairTimer: NodeJS.Timeout;
  private readonly watchdogTimer: NodeJS.Timeout;
  private readonly topology: Topology;
  private readonly timeoutMs: number;
  private readonly logger: StoreLogger;
  private readonly options: ShardedBusOptions;

  constructor(options: ShardedBusOptions) {
    this.options = options;
    this.topology = options.topology;
    this.timeoutMs = options.timeoutMs;
    this.logger = options.logger;
    this.topology.onChange(() => this.reconcile());
    this.reconcile();
    // While anything is out of line, read the cluster map again and repair:
    // after a failover it is how the bus finds the promoted replica.
    this.repairTimer = setInterval(() => this.repair(), options.repairMs ?? 500);
    this.repairTimer.unref();
    // Nothing else is sent on the bus, so a dead socket would go unnoticed: a
    // ping arms socketTimeout, which drops a connection that stopped answering.
    this.watchdogTimer = setInterval(() => {
      for (const shard of this.shards.values()) if (shard.conn.status === "ready") shard.conn.ping().catch(() => {});
    }, options.watchdogMs ?? 5_000);
    this.watchdogTimer.unref();
  }

  /** Up: every channel is subscribed on the node that serves it, and nothing was missed since the last report. */
  get up(): boolean {
    return this.busUp;
  }

  onMessage(handler: (message: BusMessage) => void): void {
    this.handlers.push(handler);
  }

  onStatus(handler: (up: boolean) => void): void {
    this.statusHandlers.push(handler);
  }

  /**
   * Wants the channel (once more). Every subscribe counts, even one that
   * failed: callers release each with one unsubscribe, and what is still
   * wanted is subscribed again when its node's connection is back.
   */
  async subscribe(channel: string, route: BusRoute): Promise<void> {
    if (this.closing !== undefined) throw closedError();
    const entry = this.channels.get(channel) ?? { route, refs: 0, node: undefined };
    entry.refs++;
    this.channels.set(channel, entry);
    const deadline = Date.now() + this.timeoutMs;
    for (let attempt = 1; ; attempt++) {
      const shard = await this.shardOf(channel, deadline);
      entry.node ??= shard.node;
      try {
        // Redis ignores a repeated SSUBSCRIBE; one sent after the last release would leak.
        await bounded(shard.conn, Math.max(1, deadline - Date.now()), () =>
          this.channels.has(channel) ? shard.conn.ssubscribe(channel) : Promise.resolve(0),
        );
        return;
      } catch (err) {
        // A slot that moved since the map was read: read it again, then retry on the new node.
        if (!isMoved(err) || attempt >= 3 || Date.now() >= deadline) throw err;
        await this.topology.refreshed(Math.min(deadline - Date.now(), this.timeoutMs));
        this.reconcile();
      }
    }
  }

  /**
   * Releases one subscribe. Local state is the truth (a reconnect restores
   * only what is wanted), so this cannot fail: an SUNSUBSCRIBE that does not
   * arrive is moot.
   */
  async unsubscribe(channel: string): Promise<void> {
    const entry = this.channels.get(channel);
    if (entry === undefined || --entry.refs > 0) return;
    this.channels.delete(channel);
    const shard = entry.node === undefined ? undefined : this.shards.get(entry.node);
    if (shard?.conn.status === "ready") await bounded(shard.conn, this.timeoutMs, () => shard.conn.sunsubscribe(channel)).catch(() => {});
  }

  /** Pings every connection: one answer per node, true when it answered in time. */
  ping(): Promise<boolean[]> {
    return Promise.all(
      [...this.shards.values()].map((shard) => bounded(shard.conn, this.timeoutMs, () => shard.conn.ping()).then(() => true, () => false)),
    );
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.watchdogTimer);
      clearInterval(this.repairTimer);
      await Promise.all([...this.shards.values()].map((shard) => closeConnection(shard.conn, this.timeoutMs)));
    })();
    return this.closing;
  }

  private safeCall(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger.warn({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, "bus handler threw");
    }
  }

  private setBus(up: boolean): void {
    if (up === this.busUp || this.closing !== undefined) return;
    this.busUp = up;
    for (const handler of this.statusHandlers) this.safeCall(() => handler(up));
  }

  /** Up again once every node's connection is ready and has every one of its channels subscribed. */
  private maybeUp(): void {
    if (this.busUp || this.shards.size === 0) return;
    for (const shard of this.shards.values()) if (!shard.synced || shard.conn.status !== "ready") return;
    for (const entry of this.channels.values()) if (entry.node === undefined || !this.shards.has(entry.node)) return;
    this.setBus(true);
  }

  private deliver(channel: string, message: string): void {
    const entry = this.channels.get(channel);
    if (entry === undefined) return; // unsubscribed meanwhile
    const parsed = decodeBusMessage(entry.route, message);
    if (parsed === undefined) return;
    for (const handler of this.handlers) this.safeCall(() => handler(parsed));
  }

  /**
   * Subscribes every channel of the shard's node (again: SSUBSCRIBE of a
   * subscribed channel is a no-op). One sync runs per shard at a time: `force`
   * (a new connection, channels moved here) makes a running one go round once
   * more; otherwise a running sync is left to finish, however slow.
   */
  private sync(shard: Shard, force: boolean): void {
    if (shard.running) {
      if (force) shard.again = true;
      return;
    }
    void this.runSync(shard);
  }

  private current(shard: Shard): boolean {
    return this.closing === undefined && this.shards.get(shard.node) === shard;
  }

  private async runSync(shard: Shard): Promise<void> {
    shard.running = true;
    try {
      for (;;) {
        shard.again = false;
        if (!this.current(shard) || shard.conn.status !== "ready") return;
        const generation = shard.generation;
        shard.synced = false;
        const outcome = await this.subscribeAll(shard, generation);
        if (outcome === "again" || (outcome === "done" && shard.again)) continue;
        if (outcome !== "done" || generation !== shard.generation) return; // dropped meanwhile: its next "ready" syncs
        shard.synced = true;
        this.maybeUp();
        return;
      }
    } finally {
      shard.running = false;
    }
  }

  /** One pass of a sync: "done", "again" (superseded, go round), or "stop". */
  private async subscribeAll(shard: Shard, generation: number): Promise<"done" | "again" | "stop"> {
    const mine = [...this.channels].filter(([, entry]) => entry.node === shard.node).map(([channel]) => channel);
    try {
      await Promise.all(
        this.topology.batches(mine).map((batch) =>
          bounded(shard.conn, this.timeoutMs, () => {
            const still = batch.filter((channel) => this.channels.get(channel)?.node === shard.node);
            return still.length > 0 ? shard.conn.ssubscribe(...still) : Promise.resolve(0);
          }),
        ),
      );
      return "done";
    } catch (err) {
      if (generation !== shard.generation || !this.current(shard)) return shard.again ? "again" : "stop";
      if (isMoved(err)) {
        // The map is out of date: the repair loop reads it again, moves the channels and syncs again.
        this.topology.refresh();
        return "stop";
      }
      this.logger.warn({ err: { message: (err as Error).message }, node: shard.node, channels: mine.length }, "bus resubscribe failed; reconnecting");
      shard.conn.disconnect(true);
      return "stop";
    }
  }

  private openShard(node: string): Shard {
    const conn = this.topology.connect(node);
    const shard: Shard = { node, conn, synced: false, generation: 0, running: false, again: false };
    this.options.onConnection?.(conn, node);
    const drop = () => {
      shard.synced = false;
      shard.generation++;
      if (this.shards.get(node) === shard) this.setBus(false);
    };
    conn.on("ready", () => this.sync(shard, true));
    conn.on("close", drop);
    conn.on("end", drop);
    // An SSUBSCRIBE answered MOVED, or the node dropped our channels of a slot
    // it no longer serves (Redis 7 sends an unasked SUNSUBSCRIBE): read the
    // map again; the channels that moved are reported and subscribed there.
    conn.on("moved", () => {
      shard.synced = false;
      this.topology.refresh();
    });
    conn.on("smessage", (channel: string, message: string) => this.deliver(channel, message));
    this.shards.set(node, shard);
    return shard;
  }

  /** Brings the shards and the channels' nodes in line with the current map. */
  private reconcile(): void {
    if (this.closing !== undefined) return;
    const nodes = this.topology.nodes();
    if (nodes.length === 0) return; // no map yet
    const wanted = new Set(nodes);
    for (const [node, shard] of this.shards) {
      if (wanted.has(node)) continue;
      this.shards.delete(node);
      shard.generation++;
      shard.conn.disconnect();
    }
    for (const node of nodes) if (!this.shards.has(node)) this.openShard(node);
    const { gained, lost } = this.moveChannels();
    if (lost) this.setBus(false);
    for (const shard of this.shards.values()) if (!shard.synced && shard.conn.status === "ready") this.sync(shard, gained.has(shard));
    this.maybeUp();
  }

  /** Points each channel at the node that serves it now; `lost`: some were subscribed elsewhere. */
  private moveChannels(): { gained: Set<Shard>; lost: boolean } {
    const gained = new Set<Shard>();
    let lost = false;
    for (const [channel, entry] of this.channels) {
      const node = this.topology.nodeOf(channel);
      if (node === entry.node) continue;
      // Published to its new node since the slot moved, and not heard here: lost.
      if (entry.node !== undefined) lost = true;
      entry.node = node;
      const shard = node === undefined ? undefined : this.shards.get(node);
      if (shard) {
        shard.synced = false;
        gained.add(shard);
      }
    }
    return { gained, lost };
  }

  private repair(): void {
    if (this.closing !== undefined) return;
    let healthy = this.busUp;
    for (const shard of this.shards.values()) if (!shard.synced || shard.conn.status !== "ready") healthy = false;
    if (healthy) return;
    this.topology.refresh();
    this.reconcile();
  }

  /** The shard that serves the channel, waiting (within the deadline) for the cluster map if need be. */
  private async shardOf(channel: string, deadline: number): Promise<Shard> {
    if (this.topology.nodes().length === 0) {
      await this.topology.mapReady(deadline - Date.now());
      this.reconcile();
    }
    const node = this.topology.nodeOf(channel);
    const shard = node === undefined ? undefined : this.shards.get(node);
    if (shard === undefined) throw new StoreUnavailableError(new Error("no node serves the channel's slot"));
    return shard;
  }
}
