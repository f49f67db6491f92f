/**
 * The SDK's second entry, `@chat-gateway/client/tabs`: one socket per
 * browser instead of one per tab (opt-in). It imports GatewayClient from the
 * first entry, so an app that uses both loads the client once; an app that
 * never shares tabs never loads this.
 */
import { GatewayClient, type GatewayClientOptions, type SendOptions } from "../index.js";
import type { ConnectionState, GatewayClientEvents } from "../types.js";
import { SharedGatewayClient, type ShareOptions } from "./SharedGatewayClient.js";

export { SharedGatewayClient, type ChannelLike, type LifecycleTarget, type ShareOptions, type SharedGatewayClientOptions } from "./SharedGatewayClient.js";
export type { LockManagerLike } from "./election.js";

/** What GatewayClient and SharedGatewayClient have in common: all an app needs. */
export interface ChatClient {
  readonly state: ConnectionState;
  readonly lastSeq: number | undefined;
  readonly epoch: string | undefined;
  readonly pendingMessageIds: string[];
  on<K extends keyof GatewayClientEvents>(type: K, listener: (event: GatewayClientEvents[K]) => void): () => void;
  off<K extends keyof GatewayClientEvents>(type: K, listener: (event: GatewayClientEvents[K]) => void): void;
  connect(): void;
  close(): void;
  send(text: string, options: SendOptions): string;
}

export interface CreateClientOptions extends GatewayClientOptions {
  /** One socket for all tabs of this origin (with the same url and share.key), held by a leader tab. Default false: one socket per client. */
  readonly shareAcrossTabs?: boolean;
  readonly share?: ShareOptions;
}

/**
 * A GatewayClient, or with `shareAcrossTabs: true` a SharedGatewayClient.
 * Where BroadcastChannel is missing, tabs cannot talk: each gets its own
 * GatewayClient, as without sharing.
 */
export function createGatewayClient(options: CreateClientOptions): ChatClient {
  const { shareAcrossTabs = false, ...rest } = options;
  const canShare = rest.share?.BroadcastChannel !== undefined || typeof globalThis.BroadcastChannel === "function";
  return shareAcrossTabs && canShare ? new SharedGatewayClient(rest) : new GatewayClient(rest);
}
