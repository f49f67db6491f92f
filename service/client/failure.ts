/** Why a connection attempt or a connection ended, and the socket plumbing both the client and the ticket requester use. */
import { errorAction, type CloseAction } from "../src/errors.js";
import { isErrorCode } from "./reasons.js";
import type { ServerFrame, StatusCode, WebSocketLike } from "./types.js";

export interface Failure {
  readonly errorCode: StatusCode;
  readonly action: CloseAction;
  /** The WebSocket close code, when a close ended it. */
  readonly code?: number;
  readonly status?: number;
  readonly message?: string;
  readonly retryAfterMs?: number;
  /** The connection had been established (a 4012 then means "go now", not "back off"). */
  readonly wasOpen?: boolean;
  /** Already reported to the app by an error frame. */
  readonly reported?: boolean;
  /** Retry without any delay (the first refusal of a token: a fresh one may well work). */
  readonly immediate?: boolean;
  /** The token was refused: the next attempt asks the app for a fresh one. */
  readonly refreshToken?: boolean;
}

/**
 * The action a fatal error frame names: its code's row of the table, or, for
 * a code this SDK does not know (a newer gateway), "stop" when the frame says
 * `retry: false`. Undefined: let the close code decide.
 */
export function fatalFrameAction(frame: { code: string; retry: boolean | undefined }): CloseAction | undefined {
  if (isErrorCode(frame.code)) return errorAction(frame.code);
  return frame.retry === false ? "stop" : undefined;
}

export function parseFrame(data: unknown): ServerFrame | undefined {
  if (typeof data !== "string") return undefined; // the gateway sends text frames only
  try {
    const value: unknown = JSON.parse(data);
    return typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string" ? (value as ServerFrame) : undefined;
  } catch {
    return undefined;
  }
}

export const noop = () => undefined;

export function closeQuietly(socket: WebSocketLike): void {
  socket.onmessage = null;
  socket.onclose = null;
  socket.onopen = null;
  // Kept, not cleared: `ws` throws an 'error' event nobody listens to (closing a socket that is still connecting emits one).
  socket.onerror = noop;
  try {
    socket.close(1000);
  } catch {
    /* already closed */
  }
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
