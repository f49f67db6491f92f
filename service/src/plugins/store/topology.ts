/**
 * Where the bus subscribes a channel: the node serving its slot. One Redis is
 * one node for every channel; a cluster's map is ioredis' slot table, kept
 * fresh by the cluster client. The ShardedBus sees Redis only through this
 * interface, so its unit tests run against a fake one.
 */
import type { EventEmitter } from "node:events";
import { Redis, type Cluster, type RedisOptions } from "ioredis";
import { bounded, retryStrategy } from "./client.js";
import { hashSlot } from "./keys.js";

/** Channels per SSUBSCRIBE when a whole shard is subscribed again. */
const SUBSCRIBE_BATCH = 500;

/**
 * A subscriber connection to one node, as the bus uses it: ioredis' Redis
 * (autoResubscribe off). Events: "ready", "close", "end", "moved" (an
 * SSUBSCRIBE answered MOVED, or the node dropped channels of a slot it no
 * longer serves), "smessage" (channel, message), "error".
 */
export interface BusConnection extends EventEmitter {
  readonly status: string;
  ssubscribe(...channels: string[]): Promise<unknown>;
  sunsubscribe(...channels: string[]): Promise<unknown>;
  ping(): Promise<unknown>;
  quit(): Promise<unknown>;
  disconnect(reconnect?: boolean): void;
}

export interface Topology {
  /** The node (its `host:port`) that serves the channel now; undefined while the map is unknown. */
  nodeOf(channel: string): string | undefined;
  /** The nodes that serve slots (the primaries); empty while the map is unknown. */
  nodes(): string[];
  /** Opens a bus connection to the node. */
  connect(node: string): BusConnection;
  /** The channels, in batches that one SSUBSCRIBE may carry (a cluster wants one slot per command). */
  batches(channels: string[]): string[][];
  /** Asks for a fresh map; `onChange` handlers run when it arrived. */
  refresh(): void;
  /** Resolves once a fresh map arrived, or after `timeoutMs`. */
  refreshed(timeoutMs: number): Promise<void>;
  /** Resolves once the map can be known (the cluster client is ready), or rejects after `timeoutMs`. */
  mapReady(timeoutMs: number): Promise<void>;
  onChange(handler: () => void): void;
  readonly clustered: boolean;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function busConnection(options: RedisOptions): BusConnection {
  return new Redis({
    ...options,
    enableOfflineQueue: false,
    retryStrategy,
    autoResubscribe: false, // the bus restores the subscriptions, to know when they are back
    connectionName: "gw-bus",
  });
}

export function singleTopology(options: RedisOptions): Topology {
  const node = `${options.host ?? "127.0.0.1"}:${options.port ?? 6379}`;
  return {
    clustered: false,
    nodeOf: () => node,
    nodes: () => [node],
    connect: () => busConnection(options),
    batches: (channels) => chunks(channels, SUBSCRIBE_BATCH),
    refresh() {},
    refreshed: () => Promise.resolve(),
    mapReady: () => Promise.resolve(),
    onChange() {},
  };
}

export function clusterTopology(cluster: Cluster, nodeOptions: RedisOptions): Topology {
  const handlers: (() => void)[] = [];
  cluster.on("refresh", () => {
    for (const handler of handlers) handler();
  });
  return {
    clustered: true,
    // Both read ioredis' slot table as it is now (it also mends single slots on MOVED), so they always agree.
    nodeOf: (channel) => cluster.slots[hashSlot(channel)]?.[0],
    nodes: () => [...new Set(cluster.slots.map((nodes) => nodes?.[0]).filter((node): node is string => node !== undefined))],
    connect(node) {
      const at = node.lastIndexOf(":");
      return busConnection({ ...nodeOptions, host: node.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(node.slice(at + 1)) });
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
    refreshed: (timeoutMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, timeoutMs));
        cluster.refreshSlotsCache(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
    mapReady: (timeoutMs) => bounded(cluster, Math.max(1, timeoutMs), () => Promise.resolve()),
    onChange(handler) {
      handlers.push(handler);
    },
  };
}
