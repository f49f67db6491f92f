import type { WebSocket } from "ws";
import { socketCloseCode, type ErrorCode } from "../errors.js";
import type { ClosedBy } from "./closeCodes.js";
import { errorFrame } from "./frames.js";

/**
 * How the gateway ends a socket (docs/protocol.md §5): one fatal error frame
 * naming the code, then the close with that code's socket close code, then a
 * bounded wait for the peer's half of the closing handshake before
 * terminate(). And, once the socket has closed, who closed it and with what.
 */

/** A closing handshake the peer never answers ends in terminate() after this. */
export const CLOSE_TIMEOUT_MS = 3000;
const PEER_CLOSES: Record<number, string> = { 1000: "NORMAL", 1001: "GOING_AWAY", 1005: "NO_STATUS", 1006: "ABNORMAL" };

/** The error frame, the close and the bounded wait. Returns the socket close code sent. */
export function closeWithError(socket: WebSocket, code: ErrorCode, message?: string): number {
  const closeCode = socketCloseCode(code);
  if (socket.readyState === socket.OPEN) socket.send(errorFrame(code, { fatal: true, message }));
  socket.close(closeCode, code);
  // A slow consumer's send buffer is full: its close frame waits behind it.
  const wait = code === "SLOW_CONSUMER" ? CLOSE_TIMEOUT_MS * 2 : CLOSE_TIMEOUT_MS;
  // A plain timer, not the wheel: it must fire even after the hub has stopped the wheel at shutdown.
  setTimeout(() => socket.terminate(), wait).unref();
  return closeCode;
}

export interface CloseOutcome {
  readonly code: number;
  readonly reason: string;
  readonly closedBy: ClosedBy;
}

/** One socket's close: started at most once by us, finished at most once by the socket's `close` event. */
export class SocketClose {
  private sent: { readonly code: number; readonly reason: ErrorCode } | undefined;
  private finished = false;
  private callbacks: Array<() => void> | undefined;

  constructor(private readonly socket: WebSocket) {}

  /** True once we started the close or the socket closed. */
  get closing(): boolean {
    return this.sent !== undefined || this.finished;
  }

  /** Starts the close the contract's way; false (and nothing sent) if it was already closing. */
  start(code: ErrorCode, message?: string): boolean {
    if (this.closing) return false;
    this.sent = { code: socketCloseCode(code), reason: code };
    closeWithError(this.socket, code, message);
    return true;
  }

  /**
   * Called from the socket's `close` event: what to report (the code we sent
   * if we started the close, else what the peer said), and the `onceClosed`
   * callbacks run. Undefined if it already finished.
   */
  finish(peerCode: number): CloseOutcome | undefined {
    if (this.finished) return undefined;
    this.finished = true;
    const outcome: CloseOutcome = this.sent
      ? { code: this.sent.code, reason: this.sent.reason, closedBy: "server" }
      : { code: peerCode, reason: PEER_CLOSES[peerCode] ?? "PEER_CLOSED", closedBy: "client" };
    return outcome;
  }

  /** Runs the callbacks waiting for the close (after the owner has reported it). */
  notifyClosed(): void {
    const callbacks = this.callbacks ?? [];
    this.callbacks = undefined;
    for (const callback of callbacks) callback();
  }

  /** Calls `callback` once the socket has closed (at once if it already has). */
  onceClosed(callback: () => void): void {
    if (this.finished) callback();
    else (this.callbacks ??= []).push(callback);
  }
}
