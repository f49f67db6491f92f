import { isUtf8 } from "node:buffer";
import type { RawData } from "ws";
import { MESSAGES, type ErrorCode } from "../errors.js";
import { FRAME_BURST_SECONDS, refillBucket } from "../protocol.js";
import type { Connection } from "./connection.js";
import type { DeliveryCursor } from "./deliveryCursor.js";
import { errorFrame, parseClientFrame, type ClientFrame } from "./frames.js";
import type { SessionLifetime } from "./sessionLifetime.js";

/**
 * What a client sends on an open connection: each frame is checked (binary,
 * size, UTF-8, shape), charged to the connection's inbound frame budget, and
 * handed to whoever acts on it (the delivery cursor, the session lifetime,
 * the chat hand-off).
 *
 * The budget is a token bucket of MAX_FRAMES_PER_SECOND refilled
 * continuously, FRAME_BURST_SECONDS deep; emptying it closes with 4429
 * RATE_LIMITED. Protocol pings and pongs are charged too (ws answers them
 * itself, so a flood of either would otherwise cost nothing).
 */

/** Bad frames cost more of the inbound budget than good ones: a flood of them trips 4429 sooner. */
export const BAD_FRAME_COST = 10;

export interface InboundDeps {
  readonly config: { readonly maxMessageBytes: number; readonly maxFramesPerSecond: number };
  readonly now: () => number;
  readonly onChat: (conn: Connection, frame: Extract<ClientFrame, { type: "chat_message" }>) => Promise<void>;
}

export class InboundFrames {
  private tokens: number;
  private lastRefill: number;

  constructor(
    private readonly conn: Connection,
    private readonly deps: InboundDeps,
    private readonly delivery: DeliveryCursor,
    private readonly lifetime: SessionLifetime,
  ) {
    this.tokens = deps.config.maxFramesPerSecond * FRAME_BURST_SECONDS;
    this.lastRefill = deps.now();
  }

  /** A protocol ping or pong from the peer. */
  onControlFrame(): void {
    if (!this.conn.closing) this.spend(1);
  }

  /** A message frame from the peer. */
  onMessage(data: RawData, isBinary: boolean): void {
    if (this.conn.closing) return;
    if (isBinary) return this.conn.close("UNSUPPORTED_DATA");
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    // ws's maxPayload is set well above MAX_MESSAGE_BYTES so that the size is
    // checked here and the client gets MESSAGE_TOO_BIG, not ws's bare 1009.
    if (bytes.length > this.deps.config.maxMessageBytes) return this.conn.close("MESSAGE_TOO_BIG");
    if (!this.spend(1)) return;
    // UTF-8 is checked here rather than by ws (which would close with 1007),
    // so a bad frame gets a non-fatal error like any other malformed frame.
    const frame = isUtf8(bytes) ? parseClientFrame(bytes.toString("utf8")) : ({ error: "MESSAGE_MALFORMED", detail: "not UTF-8" } as const);
    if ("error" in frame) return this.answerBadFrame(frame.error, frame.detail);
    // Any frame but a resume ends the live hold before it is acted on (a resume ends it itself, going first).
    if (frame.type !== "resume") this.delivery.endHold();
    void this.dispatch(frame).catch((err: unknown) => this.conn.fail(err));
  }

  private answerBadFrame(code: ErrorCode, detail: string): void {
    this.delivery.endHold();
    if (!this.spend(BAD_FRAME_COST - 1)) return;
    this.conn.send(errorFrame(code, { fatal: false, message: `${MESSAGES[code]} (${detail})` }));
  }

  private async dispatch(frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case "ping":
        this.conn.send(frame.id === undefined ? { type: "pong" } : { type: "pong", id: frame.id });
        return;
      case "resume":
        return this.delivery.requestResume(frame.last_seq, frame.epoch);
      case "chat_message":
        return this.deps.onChat(this.conn, frame);
      case "refresh_session":
        return this.lifetime.refresh(frame.token);
    }
  }

  /** Takes `cost` from the budget; closes with 4429 and returns false when it runs out. */
  private spend(cost: number): boolean {
    const now = this.deps.now();
    this.tokens = refillBucket(this.tokens, now - this.lastRefill, this.deps.config.maxFramesPerSecond);
    this.lastRefill = now;
    this.tokens -= cost;
    if (this.tokens < 0) {
      this.conn.close("RATE_LIMITED", "Too many frames. Slow down, then reconnect and resume.");
      return false;
    }
    return true;
  }
}
