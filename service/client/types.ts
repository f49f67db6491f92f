/**
 * The SDK's public types: the frames of docs/protocol.md §3-§4 and §8 as the
 * client reads them, and the events it hands to the app.
 */
import type { ErrorCode } from "../src/errors.js";
import type { AgentEventType } from "../src/plugins/store/types.js";

export type { AgentEventType };

/** An agent event as delivered to the app: every seq once, in order. */
export interface AgentEvent {
  readonly type: AgentEventType;
  readonly seq: number;
  readonly event_id: string;
  readonly run_id: string;
  readonly thread_id: string;
  /** ISO-8601 time of publication. */
  readonly ts: string;
  readonly data: Record<string, unknown>;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/**
 * Codes the SDK reports for conditions the gateway never names (the network,
 * the app's token source, the SDK's own timeouts).
 */
export type ClientCode =
  | "CONNECTING"
  | "CONNECTED"
  | "OFFLINE"
  | "NETWORK_ERROR"
  | "CONNECTION_LOST"
  | "CONNECT_TIMEOUT"
  | "HEARTBEAT_TIMEOUT"
  | "TICKET_TIMEOUT"
  | "TOKEN_UNAVAILABLE"
  | "HTTP_ERROR"
  | "STREAM_GAP"
  | "CLOSED_BY_APP";

export type StatusCode = ErrorCode | ClientCode;

export interface StateChange {
  readonly state: ConnectionState;
  /** For a person: "ticket expired, renewing…", "signed out: session revoked". */
  readonly reason: string;
  /** For a program: the gateway's error code or the SDK's own. */
  readonly errorCode: StatusCode;
  /** The WebSocket close code, when a close caused this change. */
  readonly code?: number;
  /** When a retry is scheduled: how long until it starts. */
  readonly retryInMs?: number;
}

export interface ResyncEvent {
  /** The new baseline: events after it follow; the app reloads what came before. Undefined from a gateway older than §8.1. */
  readonly latestSeq: number | undefined;
  readonly epoch: string | undefined;
  readonly reason: string;
}

export interface ClientError {
  readonly code: StatusCode;
  readonly message: string;
  /** True when it ended (or refused) the connection. */
  readonly fatal: boolean;
  /** For a chat message the gateway could not accept (it is sent again). */
  readonly messageId?: string;
  readonly status?: number;
}

export interface AckEvent {
  readonly messageId: string;
  readonly threadId: string;
}

export interface GatewayClientEvents {
  state: StateChange;
  event: AgentEvent;
  resync: ResyncEvent;
  error: ClientError;
  ack: AckEvent;
}

/** Server → client frames the SDK understands (agent events are told apart by their numeric `seq`). */
export type ServerFrame =
  | {
      type: "connection_established";
      connection_id: string;
      user_id: string;
      session_expires_at: string;
      heartbeat_interval_ms: number;
      latest_seq?: number;
      epoch?: string;
    }
  | { type: "pong"; id?: string | number }
  | { type: "ack"; message_id: string }
  | { type: "resume_complete"; replayed: number }
  | { type: "resync_required"; code: string; message?: string; latest_seq?: number; epoch?: string }
  | { type: "session_expiring"; session_expires_at: string; in_ms: number }
  | { type: "session_refreshed"; session_expires_at: string }
  | { type: "error"; code: string; message: string; fatal: boolean; retry?: boolean; message_id?: string; retry_after?: number };

export interface ChatMessageFrame {
  readonly type: "chat_message";
  readonly message_id: string;
  readonly thread_id: string;
  readonly text: string;
}

/** Handler properties are bivariant in their event (as DOM lib handlers are), so both the DOM `WebSocket` and `ws` fit. */
type Handler<E> = { bivarianceHack(event: E): void }["bivarianceHack"];

/** The part of the WHATWG WebSocket the SDK uses; the browser's and the `ws` package's both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ readonly data: unknown }> | null;
  onclose: Handler<{ readonly code: number; readonly reason: string }> | null;
  onerror: Handler<unknown> | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The timer functions the SDK uses; injectable so tests can control time. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** What the SDK needs of `window`: online/offline events and `navigator.onLine`. */
export interface NetworkWindow {
  addEventListener(type: "online" | "offline", listener: () => void): void;
  removeEventListener(type: "online" | "offline", listener: () => void): void;
  readonly navigator?: { readonly onLine?: boolean };
}

export interface TokenRequest {
  /**
   * True when the last token was refused or has expired (401 TOKEN_EXPIRED,
   * 4408 SESSION_EXPIRED, `session_expiring`): the app must ask its auth
   * service for a new one rather than hand back a cached one.
   */
  readonly forceRefresh: boolean;
}
