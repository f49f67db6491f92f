/**
 * GatewayClient: the browser (and Node) SDK of the chat gateway
 * (docs/protocol.md). Dependency-free; it imports from the service only the
 * error table and the protocol's shared rules, so the client and the gateway
 * read one set of close codes and 
 *
 * One connection attempt is: getToken() → POST a new ticket (ticket.ts) →
 * open /ws?ticket=… → connection_established → resume (when the client has a
 * position) → live events. A ticket is single-use and short-lived, so every
 * attempt fetches its own; the SDK never keeps a token or a ticket beyond the
 * attempt that needs it. Chat messages wait in the outbox (outbox.ts) until
 * acked.
 *
 * What happens after a close is decided by the fatal error frame that
 * precedes every close the gateway starts (`errorAction(frame.code)`), and by
 * `closeAction(code)` only when no such frame came: a close code can be lost
 * on the way (WebKit reports some as 1006), the frame's code cannot. The
 * actions: reconnect with capped exponential backoff and full jitter,
 * reconnect at once with a small jitter (4012), get a fresh token first
 * (4408), or stop and say why (4500-4999, 1003, 1009).
 */
import { closeAction } from "../src/errors.js";
import { backoffDelay, reconnectNowDelay } from "./backoff.js";
import { Emitter, type Listener } from "./emitter.js";
import { closeQuietly, fatalFrameAction, messageOf, noop, parseFrame, type Failure } from "./failure.js";
import { assertFits, chatFrame, createOutbox, type ChatMessage, type Outbox } from "./outbox.js";
import { describe, isErrorCode } from "./reasons.js";
import { resolveSettings, type GatewayClientOptions, type Settings } from "./settings.js";
import { EventStream } from "./stream.js";
import { createTicketRequester, type TicketRequester } from "./ticket.js";
import { TimerSet } from "./timers.js";
import type { AgentEvent, ConnectionState, GatewayClientEvents, ServerFrame, StateChange, StatusCode, WebSocketLike } from "./types.js";

export type { GatewayClientOptions };

export interface SendOptions {
  readonly threadId: string;
  /** Default: a new UUID. Sending the same id again is idempotent (the gateway runs a message_id once). */
  readonly messageId?: string;
}

/** One socket and what is known about it: all of it is forgotten with the socket. */
interface Link {
  readonly socket: WebSocketLike;
  /** connection_established came (at openedAt, naming epoch). */
  established?: boolean;
  openedAt?: number;
  epoch?: string | undefined;
  /** A ping went out and nothing came back yet. */
  awaitingPong?: boolean;
  /** A resume went out and its answer has not come. */
  resumePending?: boolean;
  /** The fatal error frame that announced the close. */
  fatal?: { code: string; message: string; retry: boolean | undefined };
}

type TimerName = "retry" | "connect" | "ping" | "resume" | "outbox" | "refresh";
/** The timers of one socket, cleared with it; "retry" outlives sockets. */
const LINK_TIMERS = ["connect", "ping", "resume", "outbox", "refresh"] as const;

/** Retry delay after the gateway could not serve a resume or a chat message (§8.2). */
const STORE_RETRY_MS = 1000;
const OPEN = 1;

export class GatewayClient {
  readonly #settings: Settings;
  readonly #events = new Emitter();
  readonly #stream: EventStream<AgentEvent>;
  readonly #outbox: Outbox;
  readonly #tickets: TicketRequester;
  readonly #timers: TimerSet<TimerName>;

  #currentState: ConnectionState = "closed";
  /** Between connect() and close() or a "stop" close. */
  #running = false;
  /** Bumped for every attempt and by close(): callbacks of an older generation are ignored. */
  #generation = 0;
  #link: Link | undefined;
  /** "connecting" is the first attempt only; after a failure or a drop it is "reconnecting". */
  #retrying = false;
  /** Consecutive failed attempts: the exponent of the backoff. */
  #attempt = 0;
  #forceRefresh = false;
  #waitingForNetwork = false;

  constructor(options: GatewayClientOptions) {
    const s = (this.#settings = resolveSettings(options));
    this.#timers = new TimerSet(s.timers);
    this.#stream = new EventStream<AgentEvent>(options.lastSeq, options.epoch);
    this.#outbox = createOutbox({ now: s.now, perSecond: s.messagesPerSecond, retryDelay: () => this.#storeRetryDelay() });
    this.#tickets = createTicketRequester({ ...s, timeoutMs: s.ticketTimeoutMs });
  }

  // ── the app's side ──

  get state(): ConnectionState {
    return this.#currentState;
  }

  /** The last seq handed to the app, in order and without holes: persist it with `epoch` to resume after a reload. */
  get lastSeq(): number | undefined {
    return this.#stream.lastSeq;
  }

  get epoch(): string | undefined {
    return this.#stream.epoch;
  }

  /** Chat messages not yet acked, in the order they were sent. */
  get pendingMessageIds(): string[] {
    return this.#outbox.ids();
  }

  on<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): () => void {
    return this.#events.on(type, listener);
  }

  off<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): void {
    this.#events.off(type, listener);
  }

  /** Starts connecting, and keeps the connection up until close() or a "stop" close. Idempotent. */
  connect(): void {
    if (this.#running) return;
    this.#running = true;
    this.#attempt = 0;
    this.#retrying = false;
    this.#watchNetwork(true);
    void this.#startAttempt();
  }

  /** Stops everything: the socket, every timer, every retry. Unacked messages stay queued for a later connect(). */
  close(): void {
    const wasRunning = this.#running;
    this.#tickets.abort();
    this.#stop();
    this.#waitingForNetwork = false;
    if (wasRunning || this.#currentState !== "closed") this.#setState({ state: "closed", errorCode: "CLOSED_BY_APP", reason: describe("CLOSED_BY_APP") });
  }

  /**
   * Queues a chat message and sends it as soon as a connection is open; it is
   * sent again on every new connection until the gateway acks it (an `ack`
   * event). The gateway runs a message_id once, so a resend never runs twice.
   * Returns the message_id.
   */
  send(text: string, options: SendOptions): string {
    return this.sendChatMessage({ text, ...options });
  }

  /** send() with the message as one object (what the tabs layer relays). */
  sendChatMessage(message: ChatMessage): string {
    const frame = chatFrame(message);
    if (this.#outbox.has(frame.message_id)) return frame.message_id;
    assertFits(frame, this.#settings.maxMessageBytes);
    this.#outbox.add(frame);
    this.#pumpOutbox();
    return frame.message_id;
  }

  // ── one attempt: token → ticket → socket ──

  async #startAttempt(): Promise<void> {
    const gen = ++this.#generation;
    this.#timers.clear("retry");
    if (!this.#running) return;
    if (this.#isOffline()) return this.#waitForNetwork();
    this.#setState({ state: this.#retrying ? "reconnecting" : "connecting", errorCode: "CONNECTING", reason: describe("CONNECTING") });

    let token: string;
    try {
      token = await this.#settings.getToken({ forceRefresh: this.#forceRefresh });
    } catch (err) {
      if (gen === this.#generation) this.#fail({ errorCode: "TOKEN_UNAVAILABLE", action: "reconnect", message: messageOf(err) });
      return;
    }
    if (gen !== this.#generation) return;
    this.#forceRefresh = false;

    const ticket = await this.#tickets.request(token, () => gen === this.#generation);
    if (typeof ticket !== "string" && ticket.refreshToken) this.#forceRefresh = true;
    if (gen !== this.#generation) return;
    if (typeof ticket !== "string") return this.#fail(ticket);
    this.#openSocket(ticket, gen);
  }

  #openSocket(ticket: string, gen: number): void {
    let socket: WebSocketLike;
    try {
      socket = new this.#settings.WebSocket(`${this.#settings.wsUrl}?ticket=${encodeURIComponent(ticket)}`);
    } catch (err) {
      return this.#fail({ errorCode: "NETWORK_ERROR", action: "reconnect", message: messageOf(err) });
    }
    this.#link = { socket };
    socket.onerror = noop; // a close event follows every error
    socket.onmessage = (event) => {
      if (gen === this.#generation) this.#onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (gen === this.#generation) this.#onClose(event.code, event.reason);
    };
    this.#timers.set("connect", this.#settings.connectTimeoutMs, () => this.#abandon("CONNECT_TIMEOUT"));
  }

  // ── frames ──

  #onFrame(data: unknown): void {
    const link = this.#link!; // set while its generation's callbacks run
    link.awaitingPong = false; // any frame proves the socket alive
    const frame = parseFrame(data);
    if (frame === undefined) return;
    if (typeof (frame as { seq?: unknown }).seq === "number") return this.#onAgentEvent(link, frame as unknown as AgentEvent);
    switch (frame.type) {
      case "connection_established":
        // §8.1: latest_seq is the baseline; a frame without one is not this protocol's (the connect timeout then retries).
        if (typeof frame.latest_seq === "number") this.#onEstablished(link, frame.latest_seq, frame.epoch);
        return;
      case "ack": {
        const acked = this.#outbox.ack(frame.message_id);
        if (acked) this.#events.emit("ack", { messageId: frame.message_id, threadId: acked.thread_id });
        return;
      }
      case "resume_complete":
        return this.#onResumeComplete(link);
      case "resync_required":
        if (typeof frame.latest_seq === "number") this.#onResync(link, frame.latest_seq, frame.epoch);
        return;
      case "session_expiring":
        void this.#refreshSession(this.#generation);
        return;
      case "error":
        return this.#onErrorFrame(link, frame);
      default:
        return; // pong, session_refreshed, and frame types added later
    }
  }

  #onEstablished(link: Link, latestSeq: number, epoch: string | undefined): void {
    this.#timers.clear("connect");
    link.established = true;
    link.openedAt = this.#settings.now();
    link.epoch = epoch;
    if (this.#stream.hasState) this.#sendResume(link);
    else this.#stream.baseline(latestSeq, epoch);
    this.#setState({ state: "open", errorCode: "CONNECTED", reason: describe("CONNECTED") });
    link.awaitingPong = false;
    this.#schedulePing(link);
    this.#pumpOutbox();
  }

  #onAgentEvent(link: Link, event: AgentEvent): void {
    if (!link.established) return;
    const { deliver } = this.#stream.accept(event);
    for (const e of deliver) this.#events.emit("event", e);
    if (!this.#stream.holeOpen) return;
    if (this.#stream.buffered > this.#settings.maxBufferedEvents) return this.#abandon("STREAM_GAP");
    // One resume per hole: its replay fills every seq up to the head, whatever arrives meanwhile.
    if (!link.resumePending) this.#sendResume(link);
  }

  #sendResume(link: Link): void {
    const lastSeq = this.#stream.lastSeq;
    if (lastSeq === undefined) return;
    const epoch = this.#stream.epoch;
    link.resumePending = true;
    this.#sendFrame(epoch === undefined ? { type: "resume", last_seq: lastSeq } : { type: "resume", last_seq: lastSeq, epoch });
  }

  #onResumeComplete(link: Link): void {
    link.resumePending = false;
    this.#timers.clear("resume");
    // Resumed without an epoch (the app gave only lastSeq): the stream is this connection's from now on.
    if (this.#stream.epoch === undefined && link.epoch !== undefined) this.#stream.adoptEpoch(link.epoch);
    // The replay is done and a hole is still open: this connection will not fill it
    // (it never re-sends what it believes it sent). A new connection replays from lastSeq.
    if (this.#stream.holeOpen) this.#abandon("STREAM_GAP");
  }

  #onResync(link: Link, latestSeq: number, epoch: string | undefined): void {
    link.resumePending = false;
    this.#timers.clear("resume");
    this.#stream.baseline(latestSeq, epoch);
    this.#events.emit("resync", { latestSeq, epoch, reason: describe("HISTORY_UNAVAILABLE") });
  }

  #onErrorFrame(link: Link, frame: Extract<ServerFrame, { type: "error" }>): void {
    const code: StatusCode = isErrorCode(frame.code) ? frame.code : "INTERNAL_ERROR";
    if (frame.fatal) {
      // The close follows; the action is this frame's code's (see onClose), whatever close code arrives.
      link.fatal = { code: frame.code, message: frame.message, retry: frame.retry };
      this.#events.emit("error", { code, message: frame.message, fatal: true });
      return;
    }
    const outcome = this.#outbox.refuse(frame.message_id, code);
    if (outcome === "resend") this.#pumpOutbox();
    else if (outcome === undefined && code === "TICKET_STORE_UNAVAILABLE" && link.resumePending) {
      // §8.2: the store could not serve a resume: ask again.
      this.#timers.set("resume", this.#storeRetryDelay(), () => this.#sendResume(link));
    }
    if (code === "AUTH_UNAVAILABLE") {
      // The gateway could not check the token (its auth keys are unreachable), not a bad token:
      // try again after the delay with the app's current token (forceRefresh: false), not a new one.
      const delayMs = Math.max(1, frame.retry_after ?? 1) * 1000 + this.#jitter();
      const gen = this.#generation;
      this.#timers.set("refresh", delayMs, () => void this.#refreshSession(gen, false));
    }
    this.#events.emit("error", { code, message: frame.message, fatal: false, ...(frame.message_id === undefined ? {} : { messageId: frame.message_id }) });
  }

  async #refreshSession(gen: number, forceRefresh = true): Promise<void> {
    let token: string;
    try {
      token = await this.#settings.getToken({ forceRefresh });
    } catch (err) {
      // The session then ends with 4408, and the reconnect asks for a token again.
      this.#events.emit("error", { code: "TOKEN_UNAVAILABLE", message: messageOf(err), fatal: false });
      return;
    }
    if (gen === this.#generation) this.#sendFrame({ type: "refresh_session", token });
  }

  // ── outbound ──

  #sendFrame(frame: object): boolean {
    const link = this.#link;
    if (!link?.established || link.socket.readyState !== OPEN) return false;
    link.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Sends what this connection has not been sent of the outbox, and wakes up for what the budget holds back. */
  #pumpOutbox(): void {
    this.#timers.clear("outbox");
    if (!this.#link?.established) return;
    const waitMs = this.#outbox.pump(this.#generation, (frame) => this.#sendFrame(frame));
    if (waitMs !== undefined) this.#timers.set("outbox", waitMs, () => this.#pumpOutbox());
  }

  /** A ping per interval; a ping that is not answered (by anything) before the next one means the socket is dead. */
  #schedulePing(link: Link): void {
    this.#timers.set("ping", this.#settings.pingIntervalMs, () => {
      if (link.awaitingPong) return this.#abandon("HEARTBEAT_TIMEOUT");
      link.awaitingPong = true;
      this.#sendFrame({ type: "ping" });
      this.#schedulePing(link);
    });
  }

  // ── closes and retries ──

  #onClose(code: number, reason: string): void {
    const wasOpen = this.#link?.established === true;
    this.#resetAttemptsIfStable();
    const fatal = this.#link?.fatal;
    const named = fatal?.code ?? reason;
    this.#fail({
      errorCode: isErrorCode(named) ? named : "CONNECTION_LOST",
      action: (fatal && fatalFrameAction(fatal)) ?? closeAction(code),
      code,
      wasOpen,
      message: fatal?.message,
      reported: fatal !== undefined,
    });
  }

  /**
   * Gives up on the current socket without waiting for its close event: a
   * half-open socket (a sleeping laptop, a dead NAT entry) may not report
   * its close for minutes.
   */
  #abandon(errorCode: StatusCode): void {
    this.#resetAttemptsIfStable();
    this.#generation++;
    this.#fail({ errorCode, action: "reconnect" });
  }

  /** A connection that stayed up long enough starts the backoff schedule over. */
  #resetAttemptsIfStable(): void {
    const link = this.#link;
    if (link?.established && this.#settings.now() - link.openedAt! >= this.#settings.backoff.stableAfterMs) this.#attempt = 0;
  }

  #fail(failure: Failure): void {
    if (!this.#running) return;
    this.#retrying = true;
    this.#dropSocket();
    const reason = describe(failure.errorCode, failure.message);
    const code = failure.code === undefined ? {} : { code: failure.code };
    if (!failure.reported) {
      const status = failure.status === undefined ? {} : { status: failure.status };
      this.#events.emit("error", { code: failure.errorCode, message: failure.message ?? reason, fatal: true, ...status });
    }
    if (failure.action === "stop") {
      this.#stop();
      this.#setState({ state: "closed", errorCode: failure.errorCode, reason, ...code });
      return;
    }
    const delay = this.#retryDelay(failure);
    if (this.#isOffline()) return this.#waitForNetwork();
    this.#setState({ state: "reconnecting", errorCode: failure.errorCode, reason, ...code, retryInMs: delay });
    this.#timers.set("retry", delay, () => void this.#startAttempt());
  }

  /** How long to wait before the next attempt; counts the attempt when it backs off. */
  #retryDelay(failure: Failure): number {
    if (failure.immediate) return 0;
    if (failure.action === "reconnect_now" && failure.wasOpen) return this.#jitter();
    if (failure.action === "refresh_token") {
      this.#forceRefresh = true;
      return failure.wasOpen ? this.#jitter() : this.#backoffDelay();
    }
    const delay = this.#backoffDelay();
    return failure.retryAfterMs === undefined ? delay : Math.max(delay, failure.retryAfterMs);
  }

  /** No socket, no timer, no network listener: nothing runs until connect(). */
  #stop(): void {
    this.#running = false;
    this.#generation++;
    this.#dropSocket();
    this.#timers.clearAll();
    this.#watchNetwork(false);
  }

  /** Detaches and closes the current socket; its events no longer reach the client. */
  #dropSocket(): void {
    const link = this.#link;
    this.#link = undefined;
    for (const name of LINK_TIMERS) this.#timers.clear(name);
    if (link) closeQuietly(link.socket);
  }

  #backoffDelay(): number {
    return backoffDelay(this.#attempt++, this.#settings.random(), this.#settings.backoff);
  }

  /** The small jitter of "reconnect now": soon, but not every client at the same millisecond. */
  #jitter(): number {
    return reconnectNowDelay(this.#settings.random(), this.#settings.backoff);
  }

  #storeRetryDelay(): number {
    return STORE_RETRY_MS + this.#jitter();
  }

  // ── the network ──

  readonly #onOnline = (): void => {
    if (!this.#running || (!this.#waitingForNetwork && !this.#timers.has("retry"))) return;
    // Back on the network: try now (with a little jitter) instead of sitting out a long backoff.
    this.#waitingForNetwork = false;
    const delay = this.#jitter();
    this.#setState({ state: "reconnecting", errorCode: "CONNECTING", reason: "back online, reconnecting…", retryInMs: delay });
    this.#timers.set("retry", delay, () => void this.#startAttempt());
  };

  readonly #onOffline = (): void => {
    // A pending retry would only fail: wait for `online` instead. An open socket is left alone (it may well survive).
    if (this.#running && this.#timers.has("retry")) this.#waitForNetwork();
  };

  #isOffline(): boolean {
    return this.#settings.network?.navigator?.onLine === false;
  }

  #waitForNetwork(): void {
    this.#timers.clear("retry");
    this.#waitingForNetwork = true;
    this.#setState({ state: "reconnecting", errorCode: "OFFLINE", reason: describe("OFFLINE") });
  }

  #watchNetwork(on: boolean): void {
    const network = this.#settings.network;
    if (!network) return;
    if (on) {
      network.addEventListener("online", this.#onOnline);
      network.addEventListener("offline", this.#onOffline);
    } else {
      network.removeEventListener("online", this.#onOnline);
      network.removeEventListener("offline", this.#onOffline);
    }
  }

  #setState(change: StateChange): void {
    this.#currentState = change.state;
    this.#events.emit("state", change);
  }
}
