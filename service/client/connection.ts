/**
 * One socket of a GatewayClient and everything known about it: whether
 * connection_established came, the heartbeat, the resume in flight, the
 * fatal frame that announced its close, and its timers. All of it is
 * forgotten with the socket (drop()).
 *
 * It handles the frames of its socket (§4-§8): events go through the
 * client's stream (holes buffered, one resume per hole), acks and refusals
 * through its outbox. What ends the socket is the client's to decide: the
 * connection reports it through its host (closed, abandon).
 */
import type { Emitter } from "./emitter.js";
import { closeQuietly, messageOf, noop, parseFrame } from "./failure.js";
import type { Outbox } from "./outbox.js";
import { describe, isErrorCode } from "./reasons.js";
import type { RetryPolicy } from "./retry.js";
import type { Settings } from "./settings.js";
import type { EventStream } from "./stream.js";
import { TimerSet } from "./timers.js";
import type { AgentEvent, ServerFrame, StatusCode, WebSocketLike } from "./types.js";

/** What a connection shares with its client, and how it reports to it. */
export interface ConnectionHost {
  readonly settings: Settings;
  readonly stream: EventStream<AgentEvent>;
  readonly outbox: Outbox;
  readonly events: Emitter;
  readonly retry: RetryPolicy;
  /** connection_established came: the client is open. */
  opened(): void;
  /** The socket closed (the client reads `fatal` for the frame that announced it). */
  closed(code: number, reason: string): void;
  /** Give up on this socket without waiting for its close event. */
  abandon(errorCode: StatusCode): void;
}

export interface FatalFrame {
  readonly code: string;
  readonly message: string;
  readonly retry: boolean | undefined;
}

const OPEN = 1;

export class Connection {
  readonly #host: ConnectionHost;
  /** Which connection the outbox has sent a message on (a message goes once per connection). */
  readonly #id: number;
  readonly #socket: WebSocketLike;
  readonly #timers: TimerSet<"connect" | "ping" | "resume" | "outbox" | "refresh">;
  /** When connection_established came; undefined before. */
  #upSince: number | undefined;
  /** The epoch connection_established named (adopted by a resume made without one). */
  #epoch: string | undefined;
  /** A ping went out and nothing came back yet. */
  #awaitingPong = false;
  /** A resume went out and its answer has not come. */
  #resumePending = false;
  /** The client let go of it: callbacks still under way (a token being fetched) do nothing. */
  #dropped = false;
  /** The fatal error frame that announced the close. */
  fatal: FatalFrame | undefined;

  /** Opens the socket; throws what the WebSocket constructor throws (a malformed URL). */
  constructor(host: ConnectionHost, ticket: string, id: number) {
    const s = host.settings;
    this.#host = host;
    this.#id = id;
    this.#timers = new TimerSet(s.timers);
    const socket = (this.#socket = new s.WebSocket(`${s.wsUrl}?ticket=${encodeURIComponent(ticket)}`));
    socket.onerror = noop; // a close event follows every error
    socket.onmessage = (event) => {
      if (!this.#dropped) this.#onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (!this.#dropped) host.closed(event.code, event.reason);
    };
    this.#timers.set("connect", s.connectTimeoutMs, () => host.abandon("CONNECT_TIMEOUT"));
  }

  get upSince(): number | undefined {
    return this.#upSince;
  }

  /** Detaches and closes the socket and clears its timers: nothing of it reaches the client any more. */
  drop(): void {
    this.#dropped = true;
    this.#timers.clearAll();
    closeQuietly(this.#socket);
  }

  /** Sends what this connection has not been sent of the outbox, and wakes up for what the budget holds back. */
  pumpOutbox(): void {
    this.#timers.clear("outbox");
    if (this.#upSince === undefined) return;
    const waitMs = this.#host.outbox.pump(this.#id, (frame) => this.#send(frame));
    if (waitMs !== undefined) this.#timers.set("outbox", waitMs, () => this.pumpOutbox());
  }

  #send(frame: object): boolean {
    if (this.#upSince === undefined || this.#socket.readyState !== OPEN) return false;
    this.#socket.send(JSON.stringify(frame));
    return true;
  }

  #onFrame(data: unknown): void {
    this.#awaitingPong = false; // any frame proves the socket alive
    const frame = parseFrame(data);
    if (frame === undefined) return;
    if (typeof (frame as { seq?: unknown }).seq === "number") return this.#onAgentEvent(frame as unknown as AgentEvent);
    switch (frame.type) {
      case "connection_established":
        // §8.1: latest_seq is the baseline; a frame without one is not this protocol's (the connect timeout then retries).
        if (typeof frame.latest_seq === "number") this.#onEstablished(frame.latest_seq, frame.epoch);
        return;
      case "ack": {
        const acked = this.#host.outbox.ack(frame.message_id);
        if (acked) this.#host.events.emit("ack", { messageId: frame.message_id, threadId: acked.thread_id });
        return;
      }
      case "resume_complete":
        return this.#onResumeComplete();
      case "resync_required":
        if (typeof frame.latest_seq === "number") this.#onResync(frame.latest_seq, frame.epoch);
        return;
      case "session_expiring":
        void this.#refreshSession(true);
        return;
      case "error":
        return this.#onErrorFrame(frame);
      default:
        return; // pong, session_refreshed, and frame types added later
    }
  }

  #onEstablished(latestSeq: number, epoch: string | undefined): void {
    const host = this.#host;
    this.#timers.clear("connect");
    this.#upSince = host.settings.now();
    this.#epoch = epoch;
    if (host.stream.hasState) this.#sendResume();
    else host.stream.baseline(latestSeq, epoch);
    host.opened();
    this.#awaitingPong = false;
    this.#schedulePing();
    this.pumpOutbox();
  }

  #onAgentEvent(event: AgentEvent): void {
    if (this.#upSince === undefined) return;
    const { stream, events, settings } = this.#host;
    const { deliver } = stream.accept(event);
    for (const e of deliver) events.emit("event", e);
    if (!stream.holeOpen) return;
    if (stream.buffered > settings.maxBufferedEvents) return this.#host.abandon("STREAM_GAP");
    // One resume per hole: its replay fills every seq up to the head, whatever arrives meanwhile.
    if (!this.#resumePending) this.#sendResume();
  }

  #sendResume(): void {
    const { lastSeq, epoch } = this.#host.stream;
    if (lastSeq === undefined) return;
    this.#resumePending = true;
    this.#send(epoch === undefined ? { type: "resume", last_seq: lastSeq } : { type: "resume", last_seq: lastSeq, epoch });
  }

  #onResumeComplete(): void {
    const stream = this.#host.stream;
    this.#resumePending = false;
    this.#timers.clear("resume");
    // Resumed without an epoch (the app gave only lastSeq): the stream is this connection's from now on.
    if (stream.epoch === undefined && this.#epoch !== undefined) stream.adoptEpoch(this.#epoch);
    // The replay is done and a hole is still open: this connection will not fill it
    // (it never re-sends what it believes it sent). A new connection replays from lastSeq.
    if (stream.holeOpen) this.#host.abandon("STREAM_GAP");
  }

  #onResync(latestSeq: number, epoch: string | undefined): void {
    this.#resumePending = false;
    this.#timers.clear("resume");
    this.#host.stream.baseline(latestSeq, epoch);
    this.#host.events.emit("resync", { latestSeq, epoch, reason: describe("HISTORY_UNAVAILABLE") });
  }

  #onErrorFrame(frame: Extract<ServerFrame, { type: "error" }>): void {
    const { outbox, events, retry } = this.#host;
    const code: StatusCode = isErrorCode(frame.code) ? frame.code : "INTERNAL_ERROR";
    if (frame.fatal) {
      // The close follows; the action is this frame's code's (see the client's onClose), whatever close code arrives.
      this.fatal = { code: frame.code, message: frame.message, retry: frame.retry };
      events.emit("error", { code, message: frame.message, fatal: true });
      return;
    }
    const outcome = outbox.refuse(frame.message_id, code);
    if (outcome === "resend") this.pumpOutbox();
    else if (outcome === undefined && code === "TICKET_STORE_UNAVAILABLE" && this.#resumePending) {
      // §8.2: the store could not serve a resume: ask again.
      this.#timers.set("resume", retry.storeRetryDelay(), () => this.#sendResume());
    }
    if (code === "AUTH_UNAVAILABLE") {
      // The gateway could not check the token (its auth keys are unreachable), not a bad token:
      // try again after the delay with the app's current token (forceRefresh: false), not a new one.
      const delayMs = Math.max(1, frame.retry_after ?? 1) * 1000 + retry.jitter();
      this.#timers.set("refresh", delayMs, () => void this.#refreshSession(false));
    }
    events.emit("error", { code, message: frame.message, fatal: false, ...(frame.message_id === undefined ? {} : { messageId: frame.message_id }) });
  }

  /** §6: a fresh token on this socket (session_expiring, or the retry after AUTH_UNAVAILABLE). */
  async #refreshSession(forceRefresh: boolean): Promise<void> {
    let token: string;
    try {
      token = await this.#host.settings.getToken({ forceRefresh });
    } catch (err) {
      // The session then ends with 4408, and the reconnect asks for a token again.
      this.#host.events.emit("error", { code: "TOKEN_UNAVAILABLE", message: messageOf(err), fatal: false });
      return;
    }
    if (!this.#dropped) this.#send({ type: "refresh_session", token });
  }

  /** A ping per interval; a ping that is not answered (by anything) before the next one means the socket is dead. */
  #schedulePing(): void {
    this.#timers.set("ping", this.#host.settings.pingIntervalMs, () => {
      if (this.#awaitingPong) return this.#host.abandon("HEARTBEAT_TIMEOUT");
      this.#awaitingPong = true;
      this.#send({ type: "ping" });
      this.#schedulePing();
    });
  }
}
