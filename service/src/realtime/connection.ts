import type { WebSocket, RawData } from "ws";
import type { FastifyBaseLogger } from "fastify";
import type { Config } from "../config.js";
import { socketErrorCode, type ErrorCode } from "../errors.js";
import type { TokenVerifier } from "../auth/verifier.js";
import type { Metrics } from "../plugins/metrics.js";
import { StoreUnavailableError, type HistoryRead, type Store, type StoredEvent, type StreamHead } from "../plugins/store/types.js";
import type { ClientFrame } from "./frames.js";
import type { ClosedBy } from "./closeCodes.js";
import { SocketClose } from "./closeProtocol.js";
import { DeliveryCursor, type DeliveryIo, type ResumeOutcome } from "./deliveryCursor.js";
import { InboundFrames } from "./inboundFrames.js";
import type { ConnectionReplayBudget } from "./replayBudget.js";
import { SessionLifetime } from "./sessionLifetime.js";
import type { TimerWheel } from "./timerWheel.js";

/**
 * One authenticated socket. It joins four parts, each in its own module:
 * the order of what it is sent (deliveryCursor.ts), what the client sends
 * and its frame budget (inboundFrames.ts), how long it may live
 * (sessionLifetime.ts) and how it ends (closeProtocol.ts). The connection
 * owns the socket: sending with the send-buffer bound, waiting out
 * backpressure, reading history for the cursor, and the heartbeat.
 *
 * The parts call back into the connection itself (it is their `DeliveryIo`
 * and `LifetimeOwner`) rather than through closures: an idle connection's
 * memory is what sizes an instance (docs/benchmarks.md, bench 4).
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
  /** The process's timer wheel (the hub's): session deadlines and the live hold. */
  readonly timers: TimerWheel;
  readonly onChat: (conn: Connection, frame: Extract<ClientFrame, { type: "chat_message" }>) => Promise<void>;
  readonly onClosed: (conn: Connection, code: number, reason: string, closedBy: ClosedBy) => void;
  readonly now: () => number;
}

/** A replay waits for the socket's send buffer; a client that reads nothing for this long is a slow consumer. */
const REPLAY_STALL_MS = 5000;
const SEND_BUFFER_POLL_MS = 10;

export class Connection implements DeliveryIo {
  readonly id: string;
  readonly userId: string;
  readonly connectedAt: number;
  private missedPongs = 0;
  private readonly ending: SocketClose;
  private readonly delivery: DeliveryCursor;
  private readonly lifetime: SessionLifetime;
  private readonly inbound: InboundFrames;

  constructor(private readonly deps: ConnectionDeps) {
    this.id = deps.id;
    this.userId = deps.userId;
    this.connectedAt = deps.now();
    this.ending = new SocketClose(deps.socket);
    this.delivery = new DeliveryCursor(this, deps.replayBudget, deps.timers);
    this.lifetime = new SessionLifetime(this, deps, deps.sessionExpiresAt);
    this.inbound = new InboundFrames(this, deps, this.delivery, this.lifetime);
    deps.socket.on("pong", () => {
      this.missedPongs = 0;
      this.inbound.onControlFrame();
    });
    deps.socket.on("ping", () => this.inbound.onControlFrame());
    deps.socket.on("close", (code) => this.onSocketClose(code));
  }

  get open(): boolean {
    return !this.ending.closing && this.deps.socket.readyState === this.deps.socket.OPEN;
  }

  /** True once the close has started (by us or the peer). */
  get closing(): boolean {
    return this.ending.closing;
  }

  /** Starts live delivery from the user's stream head (read after the bus subscription was in place). */
  start(head: StreamHead, pending: ReadonlyArray<[RawData, boolean]>): void {
    this.send({
      type: "connection_established",
      connection_id: this.id,
      user_id: this.userId,
      session_expires_at: new Date(this.lifetime.sessionExpiresAt).toISOString(),
      heartbeat_interval_ms: this.deps.config.heartbeatIntervalMs,
      latest_seq: head.latestSeq,
      epoch: head.epoch,
    });
    this.delivery.start(head);
    this.lifetime.onDeadline();
    this.deps.socket.on("message", (data, isBinary) => this.inbound.onMessage(data, isBinary));
    for (const [data, isBinary] of pending) this.inbound.onMessage(data, isBinary);
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

  /** A live event from the bus (the hub calls this for each of the user's connections). */
  deliverLive(epoch: string, event: StoredEvent): void {
    this.delivery.deliverLive(epoch, event);
  }

  /** After a bus outage: send whatever was published while this instance could not hear it. */
  catchUp(): void {
    this.delivery.catchUp();
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

  // ── the delivery cursor's I/O (DeliveryIo) ──

  sendEvent(frame: string): boolean {
    if (!this.send(frame)) return false;
    this.deps.metrics.eventsDelivered.inc();
    return true;
  }

  async readHistory(afterSeq: number): Promise<HistoryRead | undefined> {
    const limits = { maxEvents: this.deps.config.historyMaxEvents, ttlMs: this.deps.config.historyTtlSeconds * 1000 };
    try {
      return await this.deps.store.readHistory(this.userId, afterSeq, limits);
    } catch (err) {
      if (err instanceof StoreUnavailableError) {
        this.deps.metrics.storeUnavailable.inc({ operation: "read_history" });
        return undefined;
      }
      throw err;
    }
  }

  /**
   * Backpressure for replays: a backlog of history can be far larger than
   * the send buffer's bound, so a replay waits for the buffer to fall below
   * half of it instead of tripping SLOW_CONSUMER. Only a client that reads
   * nothing for REPLAY_STALL_MS is cut. Resolves false when the connection is gone.
   */
  async waitForSendBuffer(): Promise<boolean> {
    const socket = this.deps.socket;
    const mark = this.deps.config.maxSendBufferBytes / 2;
    for (let waited = 0; socket.bufferedAmount > mark; waited += SEND_BUFFER_POLL_MS) {
      if (!this.open) return false;
      if (waited >= REPLAY_STALL_MS) {
        this.close("SLOW_CONSUMER");
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, SEND_BUFFER_POLL_MS));
    }
    return this.open;
  }

  countResume(outcome: ResumeOutcome): void {
    this.deps.metrics.resumes.inc({ outcome });
  }

  /** An unexpected error on this connection: logged, and the connection closes with its code (1011 for a bug). */
  fail(err: unknown): void {
    this.deps.log.error({ err, event: "ws_internal_error", connection_id: this.id }, "unexpected error on a connection");
    this.close(socketErrorCode(err));
  }

  // ── the end ──

  /** Ends the connection the contract's way: one fatal error frame naming the code, then the close (closeProtocol.ts). */
  close(code: ErrorCode, message?: string): void {
    if (this.ending.start(code, message)) this.lifetime.stop();
  }

  /** Calls `callback` once the socket has closed (at once if it already has). */
  onceClosed(callback: () => void): void {
    this.ending.onceClosed(callback);
  }

  private onSocketClose(peerCode: number): void {
    const outcome = this.ending.finish(peerCode);
    this.lifetime.stop();
    this.delivery.stop();
    if (outcome === undefined) return;
    this.deps.onClosed(this, outcome.code, outcome.reason, outcome.closedBy);
    this.ending.notifyClosed();
  }
}
