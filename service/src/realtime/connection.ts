import { isUtf8 } from "node:buffer";
import type { WebSocket, RawData } from "ws";
import type { FastifyBaseLogger } from "fastify";
import type { Config } from "../config.js";
import { GatewayError, isGatewayError, MESSAGES, socketCloseCode, socketErrorCode, type ErrorCode } from "../errors.js";
import { issuedBefore, type TokenVerifier } from "../auth/verifier.js";
import type { Metrics } from "../plugins/metrics.js";
import { StoreUnavailableError, type HistoryLimits, type Store, type StoredEvent, type StreamHead } from "../plugins/store/types.js";
import { FRAME_BURST_SECONDS, refillBucket } from "../protocol.js";
import { errorFrame, parseClientFrame, type ClientFrame } from "./frames.js";
import { eventFrame } from "./events.js";
import type { ClosedBy } from "./closeCodes.js";
import type { ConnectionReplayBudget } from "./replayBudget.js";

/**
 * One authenticated socket: its frames, its session lifetime and the order of
 * what it is sent.
 *
 * Delivery keeps one invariant: the seqs this connection has sent form the
 * interval (sentLow, sentHigh]. Live events extend it at the top, in order;
 * a gap (a lost bus message, or a bus outage) is filled from history before
 * anything later is sent; a `resume` fills it at the bottom and sends only
 * what the interval lacks. So every event reaches the socket once, and none
 * is skipped silently: when history cannot fill a gap the client is told
 * `resync_required`.
 *
 * A new connection holds its live events until the client has said where it
 * is (its first frame, normally `resume`) or LIVE_HOLD_MS has passed, so that
 * a resume's replay of older seqs always goes out before newer live ones.
 */
export interface ConnectionDeps {
  readonly socket: WebSocket;
  readonly id: string;
  readonly userId: string;
  readonly sessionExpiresAt: number;
  readonly config: Config;
  readonly store: Store;
  readonly metrics: Metrics;
  readonly log: FastifyBaseLogger;
  readonly verifier: TokenVerifier;
  /** What this connection's resumes may read from the store (replayBudget.ts). */
  readonly replayBudget: ConnectionReplayBudget;
  readonly onChat: (conn: Connection, frame: Extract<ClientFrame, { type: "chat_message" }>) => Promise<void>;
  readonly onClosed: (conn: Connection, code: number, reason: string, closedBy: ClosedBy) => void;
  readonly now: () => number;
}

type Task =
  | { kind: "live"; epoch: string; event: StoredEvent }
  | { kind: "resume"; lastSeq: number; epoch: string | undefined }
  | { kind: "catch_up" };

const SESSION_WARNING_MS = 60_000;
/** How long a new connection waits for the client's first frame before live events flow anyway. */
const LIVE_HOLD_MS = 1000;
/** A closing handshake the peer never answers ends in terminate() after this. */
const CLOSE_TIMEOUT_MS = 3000;
/** Bad frames cost more of the inbound budget than good ones: a flood of them trips 4429 sooner. */
const BAD_FRAME_COST = 10;
const STORE_RETRY_MS = 500;
/** A replay waits for the socket to drain; a client that reads nothing for this long is a slow consumer. */
const REPLAY_STALL_MS = 5000;
const MAX_TIMER_MS = 2 ** 31 - 1;
const PEER_CLOSES: Record<number, string> = { 1000: "NORMAL", 1001: "GOING_AWAY", 1005: "NO_STATUS", 1006: "ABNORMAL" };

export class Connection {
  readonly id: string;
  readonly userId: string;
  readonly connectedAt: number;
  private sessionExpiresAt: number;
  private warnedFor = 0;
  private timer: NodeJS.Timeout | undefined;
  private missedPongs = 0;
  private tokens: number;
  private lastRefill: number;
  private closing = false;
  private closeCode = 1006;
  private closeReason = "";
  private finished = false;
  private readonly closedCallbacks: Array<() => void> = [];

  private epoch = "";
  private sentLow = 0;
  private sentHigh = 0;
  private busy = false;
  private held = true;
  private holdTimer: NodeJS.Timeout | undefined;
  private readonly queue: Task[] = [];
  private readonly limits: HistoryLimits;

  constructor(private readonly deps: ConnectionDeps) {
    this.id = deps.id;
    this.userId = deps.userId;
    this.sessionExpiresAt = deps.sessionExpiresAt;
    this.connectedAt = deps.now();
    this.tokens = deps.config.maxFramesPerSecond * FRAME_BURST_SECONDS;
    this.lastRefill = this.connectedAt;
    this.limits = { maxEvents: deps.config.historyMaxEvents, ttlMs: deps.config.historyTtlSeconds * 1000 };
    // Protocol pings and pongs are frames too (a pong may come unasked): ws
    // handles them itself, so a flood of either is counted here against the
    // same inbound budget as messages.
    deps.socket.on("pong", () => {
      this.missedPongs = 0;
      if (!this.closing) this.spend(1);
    });
    deps.socket.on("ping", () => {
      if (!this.closing) this.spend(1);
    });
    deps.socket.on("close", (code) => this.onSocketClose(code));
  }

  get open(): boolean {
    return !this.closing && this.deps.socket.readyState === this.deps.socket.OPEN;
  }

  /** Starts live delivery from the user's stream head (read after the bus subscription was in place). */
  start(head: StreamHead, pending: ReadonlyArray<[RawData, boolean]>): void {
    this.epoch = head.epoch;
    this.sentLow = this.sentHigh = head.latestSeq;
    this.send({
      type: "connection_established",
      connection_id: this.id,
      user_id: this.userId,
      session_expires_at: new Date(this.sessionExpiresAt).toISOString(),
      heartbeat_interval_ms: this.deps.config.heartbeatIntervalMs,
      latest_seq: head.latestSeq,
      epoch: head.epoch,
    });
    this.schedule();
    this.holdTimer = setTimeout(() => this.release(), LIVE_HOLD_MS);
    this.deps.socket.on("message", (data, isBinary) => this.onFrame(data, isBinary));
    for (const [data, isBinary] of pending) this.onFrame(data, isBinary);
  }

  /** Called by the hub on every heartbeat tick: a peer that missed two pongs is gone. */
  heartbeat(): void {
    if (this.closing) return;
    if (this.missedPongs >= 2) {
      this.deps.metrics.heartbeatTimeouts.inc();
      this.deps.log.info({ event: "ws_heartbeat_timeout", connection_id: this.id }, "peer missed two pongs");
      this.deps.socket.terminate();
      return;
    }
    this.missedPongs++;
    this.deps.socket.ping();
  }

  // ── delivery ──

  deliverLive(epoch: string, event: StoredEvent): void {
    // Fast path, no allocation: the next event in order, nothing queued.
    if (!this.busy && !this.held && this.queue.length === 0 && epoch === this.epoch) {
      if (event.seq === this.sentHigh + 1) return this.sendEvent(event);
      if (event.seq <= this.sentHigh) return; // already sent (a replay got there first)
    }
    this.enqueue({ kind: "live", epoch, event });
  }

  /** After a bus outage: send whatever was published while this instance could not hear it. */
  catchUp(): void {
    this.enqueue({ kind: "catch_up" });
  }

  private enqueue(task: Task): void {
    this.queue.push(task);
    if (!this.busy && !this.held) void this.drain();
  }

  /** Ends the hold of a new connection; a first `resume` goes ahead of the live events held meanwhile. */
  private release(first?: Task): void {
    if (!this.held) return;
    this.held = false;
    clearTimeout(this.holdTimer);
    if (first) this.queue.unshift(first);
    if (!this.busy && this.queue.length > 0) void this.drain();
  }

  private async drain(): Promise<void> {
    this.busy = true;
    try {
      while (this.queue.length > 0 && this.open) {
        const task = this.queue[0]!;
        const done = await this.run(task);
        if (done) this.queue.shift();
        else await sleep(STORE_RETRY_MS); // the store is down: keep the task, try again
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.busy = false;
    }
  }

  /** Returns false when the store was unreachable and the task must be retried. */
  private async run(task: Task): Promise<boolean> {
    if (task.kind === "resume") return this.resume(task.lastSeq, task.epoch);
    if (task.kind === "catch_up") return this.fill(this.sentHigh + 1);
    const { epoch, event } = task;
    if (epoch !== this.epoch) {
      // The store lost its data and the counter started again: say so, then carry on from the new stream.
      this.resync(event.seq - 1, epoch);
    }
    if (event.seq <= this.sentHigh) return true;
    if (event.seq > this.sentHigh + 1 && !(await this.fill(event.seq))) return false;
    if (event.seq === this.sentHigh + 1) this.sendEvent(event);
    return true;
  }

  /** Sends everything after sentHigh up to at least `through - 1` from history. */
  private async fill(through: number): Promise<boolean> {
    const read = await this.readHistory(this.sentHigh);
    if (read === undefined) return false;
    if (read.epoch !== this.epoch) {
      this.resync(read.latestSeq, read.epoch);
      return true;
    }
    for (const e of read.events) {
      if (e.seq !== this.sentHigh + 1) continue;
      if (!(await this.drained())) return true;
      this.sendEvent(e);
    }
    if (this.sentHigh < through - 1) {
      // History no longer covers the gap: the client must reload rather than miss events silently.
      this.resync(through - 1, read.epoch);
    }
    return true;
  }

  private async resume(lastSeq: number, clientEpoch: string | undefined): Promise<boolean> {
    if (!this.deps.replayBudget.allows()) {
      this.deps.metrics.resumes.inc({ outcome: "rate_limited" });
      this.close("RATE_LIMITED", "Too many resumes. Reconnect after a pause, then resume once.");
      return true;
    }
    const read = await this.readHistory(lastSeq);
    // Charged what it read, not what it sent: reading is what costs the store.
    this.deps.replayBudget.charge(read?.events.length ?? 0);
    if (read === undefined) {
      this.deps.metrics.resumes.inc({ outcome: "unavailable" });
      this.send(errorFrame("TICKET_STORE_UNAVAILABLE", { fatal: false, message: "History is unavailable right now; send resume again shortly." }));
      return true; // the client retries; do not block live delivery behind it
    }
    if ((clientEpoch !== undefined && clientEpoch !== read.epoch) || read.epoch !== this.epoch || !read.complete) {
      this.deps.metrics.resumes.inc({ outcome: "resync" });
      // Within one epoch the latest seq never falls, so it is at least what this connection has sent.
      this.resync(read.latestSeq, read.epoch);
      return true;
    }
    let replayed = 0;
    for (const e of read.events) {
      if (e.seq > lastSeq && (e.seq <= this.sentLow || e.seq > this.sentHigh)) {
        if (!(await this.drained())) return true;
        this.sendFrame(eventFrame(e.seq, e.body));
        replayed++;
      }
    }
    this.sentLow = Math.min(this.sentLow, lastSeq);
    this.sentHigh = Math.max(this.sentHigh, read.latestSeq);
    this.deps.metrics.resumes.inc({ outcome: "ok" });
    this.send({ type: "resume_complete", replayed });
    return true;
  }

  /**
   * Flow control for replays: a backlog of history can be far larger than the
   * send buffer's bound, so a replay waits for the socket to drain below half
   * of it instead of tripping SLOW_CONSUMER. Only a client that reads nothing
   * for REPLAY_STALL_MS is cut. Resolves false when the connection is gone.
   */
  private async drained(): Promise<boolean> {
    const socket = this.deps.socket;
    const limit = this.deps.config.maxSendBufferBytes / 2;
    for (let waited = 0; socket.bufferedAmount > limit; waited += 10) {
      if (!this.open) return false;
      if (waited >= REPLAY_STALL_MS) {
        this.close("SLOW_CONSUMER");
        return false;
      }
      await sleep(10);
    }
    return this.open;
  }

  private resync(latestSeq: number, epoch: string): void {
    this.epoch = epoch;
    this.sentLow = this.sentHigh = latestSeq;
    this.send({ type: "resync_required", code: "HISTORY_UNAVAILABLE", message: MESSAGES.HISTORY_UNAVAILABLE, latest_seq: latestSeq, epoch });
  }

  private async readHistory(afterSeq: number) {
    try {
      return await this.deps.store.readHistory(this.userId, afterSeq, this.limits);
    } catch (err) {
      if (err instanceof StoreUnavailableError) {
        this.deps.metrics.storeUnavailable.inc({ operation: "read_history" });
        return undefined;
      }
      throw err;
    }
  }

  private sendEvent(event: StoredEvent): void {
    this.sentHigh = event.seq;
    this.sendFrame(eventFrame(event.seq, event.body));
  }

  private sendFrame(frame: string): void {
    if (!this.send(frame)) return;
    this.deps.metrics.eventsDelivered.inc();
  }

  /** Sends a frame; a socket whose unsent bytes pass the bound is cut as a slow consumer. */
  send(frame: string | object): boolean {
    if (!this.open) return false;
    const socket = this.deps.socket;
    socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    if (socket.bufferedAmount > this.deps.config.maxSendBufferBytes) {
      this.close("SLOW_CONSUMER");
      return false;
    }
    return true;
  }

  // ── inbound frames ──

  private onFrame(data: RawData, isBinary: boolean): void {
    if (this.closing) return;
    if (isBinary) return this.close("UNSUPPORTED_DATA");
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    // ws's maxPayload is set well above MAX_MESSAGE_BYTES so that the size is
    // checked here and the client gets MESSAGE_TOO_BIG, not ws's bare 1009.
    if (bytes.length > this.deps.config.maxMessageBytes) return this.close("MESSAGE_TOO_BIG");
    if (!this.spend(1)) return;
    // UTF-8 is checked here rather than by ws (which would close with 1007),
    // so a bad frame gets a non-fatal error like any other malformed frame.
    const frame = isUtf8(bytes) ? parseClientFrame(bytes.toString("utf8")) : ({ error: "MESSAGE_MALFORMED", detail: "not UTF-8" } as const);
    if (this.held) {
      if (!("error" in frame) && frame.type === "resume") return this.release({ kind: "resume", lastSeq: frame.last_seq, epoch: frame.epoch });
      this.release();
    }
    if ("error" in frame) {
      if (!this.spend(BAD_FRAME_COST - 1)) return;
      this.send(errorFrame(frame.error, { fatal: false, message: `${MESSAGES[frame.error]} (${frame.detail})` }));
      return;
    }
    void this.handle(frame).catch((err) => this.fail(err));
  }

  private spend(cost: number): boolean {
    const now = this.deps.now();
    this.tokens = refillBucket(this.tokens, now - this.lastRefill, this.deps.config.maxFramesPerSecond);
    this.lastRefill = now;
    this.tokens -= cost;
    if (this.tokens < 0) {
      this.close("RATE_LIMITED", "Too many frames. Slow down, then reconnect and resume.");
      return false;
    }
    return true;
  }

  private async handle(frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case "ping":
        this.send(frame.id === undefined ? { type: "pong" } : { type: "pong", id: frame.id });
        return;
      case "resume":
        return this.requestResume({ kind: "resume", lastSeq: frame.last_seq, epoch: frame.epoch });
      case "chat_message":
        return this.deps.onChat(this, frame);
      case "refresh_session":
        return this.refresh(frame.token);
    }
  }

  /**
   * One resume in flight per connection: a resume asked for while another
   * waits in the queue replaces it (the newer position wins, and one
   * `resume_complete` answers both), so a burst of resumes costs one read.
   */
  private requestResume(task: Extract<Task, { kind: "resume" }>): void {
    const waiting = this.queue.findIndex((t, i) => t.kind === "resume" && !(this.busy && i === 0));
    if (waiting >= 0) this.queue[waiting] = task;
    else this.enqueue(task);
  }

  private async refresh(token: string): Promise<void> {
    try {
      const verified = await this.deps.verifier.verify(token);
      if (verified.sub !== this.userId) throw new GatewayError("TOKEN_INVALID");
      // A token from before a revoke's not_before extends nothing (the store down: refuse, the session goes on).
      const notBefore = await this.deps.store.tokensNotBefore(this.userId).catch((err: unknown) => {
        if (err instanceof StoreUnavailableError) return Number.MAX_SAFE_INTEGER;
        throw err;
      });
      if (issuedBefore(verified, notBefore)) throw new GatewayError("TOKEN_REVOKED");
      this.sessionExpiresAt = verified.expiresAt;
      this.schedule();
      this.send({ type: "session_refreshed", session_expires_at: new Date(this.sessionExpiresAt).toISOString() });
    } catch (err) {
      if (!isGatewayError(err)) throw err;
      if (err.code === "AUTH_UNAVAILABLE") {
        // Not the token's fault: the client sends the same token again after the delay.
        this.send(errorFrame("AUTH_UNAVAILABLE", { fatal: false, extra: { retry_after: err.retryAfter ?? 1 } }));
        return;
      }
      // An expired or foreign token is just as unusable here: one code, the session goes on until its end.
      this.send(errorFrame("TOKEN_INVALID", { fatal: false, message: "refresh_session needs a valid, unexpired token of the same user." }));
    }
  }

  // ── lifetime ──

  /** One timer per connection, set to the next of: the session warning, the session end, the age limit. */
  private schedule(): void {
    clearTimeout(this.timer);
    if (this.closing) return;
    const now = this.deps.now();
    const ageEnd = this.connectedAt + this.deps.config.maxConnectionAgeSeconds * 1000;
    const warnAt = this.sessionExpiresAt - SESSION_WARNING_MS;
    if (now >= this.sessionExpiresAt) return this.close("SESSION_EXPIRED");
    if (now >= ageEnd) return this.close("CONNECTION_AGE");
    if (now >= warnAt && this.warnedFor !== this.sessionExpiresAt) {
      this.warnedFor = this.sessionExpiresAt;
      this.send({
        type: "session_expiring",
        session_expires_at: new Date(this.sessionExpiresAt).toISOString(),
        in_ms: this.sessionExpiresAt - now,
      });
    }
    const next = Math.min(ageEnd, this.sessionExpiresAt, this.warnedFor === this.sessionExpiresAt ? Infinity : warnAt);
    this.timer = setTimeout(() => this.schedule(), Math.min(Math.max(next - now, 0), MAX_TIMER_MS));
  }

  /** Ends the connection the contract's way: one fatal error frame naming the code, then the close. */
  close(code: ErrorCode, message?: string): void {
    if (this.closing) return;
    const closeCode = socketCloseCode(code);
    if (this.deps.socket.readyState === this.deps.socket.OPEN) {
      this.deps.socket.send(errorFrame(code, { fatal: true, message }));
    }
    this.closing = true;
    this.closeCode = closeCode;
    this.closeReason = code;
    clearTimeout(this.timer);
    this.deps.socket.close(closeCode, code);
    setTimeout(() => this.deps.socket.terminate(), code === "SLOW_CONSUMER" ? CLOSE_TIMEOUT_MS * 2 : CLOSE_TIMEOUT_MS).unref();
  }

  private fail(err: unknown): void {
    this.deps.log.error({ err, event: "ws_internal_error", connection_id: this.id }, "unexpected error on a connection");
    this.close(socketErrorCode(err));
  }

  /** Calls `callback` once the socket has closed (at once if it already has). */
  onceClosed(callback: () => void): void {
    if (this.finished) callback();
    else this.closedCallbacks.push(callback);
  }

  private onSocketClose(peerCode: number): void {
    this.finished = true;
    clearTimeout(this.timer);
    clearTimeout(this.holdTimer);
    this.queue.length = 0;
    // The code we sent if we started the close, else what the peer said.
    const code = this.closing ? this.closeCode : peerCode;
    const reason = this.closing ? this.closeReason : (PEER_CLOSES[peerCode] ?? "PEER_CLOSED");
    const closedBy: ClosedBy = this.closing ? "server" : "client";
    this.closing = true;
    this.deps.onClosed(this, code, reason, closedBy);
    for (const callback of this.closedCallbacks.splice(0)) callback();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
