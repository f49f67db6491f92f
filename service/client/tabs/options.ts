/** What an app can set for sharing one socket between tabs (SharedGatewayClient). */
import type { GatewayClientOptions } from "../index.js";
import type { LockManagerLike } from "./election.js";

/** The part of BroadcastChannel used here; the browser's and Node's both fit. */
export interface ChannelLike {
  onmessage: ((event: { data: unknown }) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}

/** Where "freeze" (the document) and "pagehide" (the window) are announced, per the Page Lifecycle API. */
export interface LifecycleTarget {
  addEventListener(type: "freeze" | "pagehide", listener: () => void): void;
  removeEventListener(type: "freeze" | "pagehide", listener: () => void): void;
}

export interface ShareOptions {
  /** Tabs share a socket when they have the same gateway URL and key: use the signed-in user's id. Default "". */
  readonly key?: string;
  readonly BroadcastChannel?: new (name: string) => ChannelLike;
  /** Default `navigator.locks`; null: elect by heartbeats and claims instead. */
  readonly locks?: LockManagerLike | null;
  /** How often the leader says it is alive. Default 400 ms. */
  readonly heartbeatMs?: number;
  /**
   * Silence after which another tab takes over (a frozen or hung leader).
   * Default 1200 ms: above the 1 s to which browsers throttle the timers of
   * background tabs, and low enough for a takeover within 2 s.
   */
  readonly leaderTimeoutMs?: number;
  /** How long a new leader waits for the tabs' positions. Default 150 ms. */
  readonly collectMs?: number;
  /** Default: the global `document` (freeze) and `window` (pagehide); null for none. */
  readonly lifecycle?: LifecycleTarget | null;
  /** Called when this tab starts or stops holding the browser's socket. */
  readonly onRoleChange?: (leader: boolean) => void;
}

export interface SharedGatewayClientOptions extends GatewayClientOptions {
  readonly share?: ShareOptions;
}
