/**
 * GatewayClient: the browser (and Node) SDK of the chat gateway
 * (docs/protocol.md). Dependency-free; the only import from the service is
 * the error table, so the client and the gateway read one set of close codes.
 *
 * One connection attempt is: getToken() → POST a new ticket → open
 * /ws?ticket=… → connection_established → resume (when the client has a
 * position) → live events. A ticket is single-use and short-lived, so every
 * attempt fetches its own; the SDK never keeps a token or a ticket beyond the
 * attempt that needs it.
 *
 * What happens after a close is decided by the fatal error frame that
 * precedes every close the gateway starts (`errorAction(frame.code)`), and by
 * `closeAction(code)` only when no such frame came: a close code can be lost
 * on the way (WebKit reports some as 1006), the frame's code cannot. The
 * actions: reconnect with capped exponential backoff and full jitter,
 * reconnect at once with a small jitter (4012), get a fresh token first
 * (4408), or stop and say why (4500-4999, 1003, 1009).
 */
import { closeAction, errorAction, type CloseAction } from "../src/errors.js";
import { backoffDelay, DEFAULT_BACKOFF, parseRetryAfter, reconnectNowDelay, type BackoffOptions } from "./backoff.js";
import { describe, isErrorCode } from "./reasons.js";
import { EventStream } from "./stream.js";
import type {
  AgentEvent,
  ChatMessageFrame,
  ConnectionState,
  GatewayClientEvents,
  NetworkWindow,
  ServerFrame,
  StateChange,
  StatusCode,
  Timers,
  TokenRequest,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";

export interface GatewayClientOptions {
  /** The gateway's base URL, e.g. `https://chat.example.com` (http(s) or ws(s)). */
  readonly url: string;
  /**
   * The app's current user JWT. Called for every connection attempt and for
   * `session_expiring`; with `forceRefresh: true` when the previous one was
   * refused or is about to expire.
   */
  readonly getToken: (request: TokenRequest) => Promise<string>;
  readonly backoff?: BackoffOptions;
  /** Resume from here (a position the app persisted). Without it, the first connection's `latest_seq` is the baseline. */
  readonly lastSeq?: number;
  readonly epoch?: string;
  /** Default: the global WebSocket. Node 20 has none: pass the `ws` package's. */
  readonly WebSocket?: WebSocketConstructor;
  readonly fetch?: typeof fetch;
  readonly timers?: Timers;
  readonly now?: () => number;
  /** In [0, 1); drives the jitter. */
  readonly random?: () => number;
  /** For online/offline events. Default: the global `window` when there is one; null for none. */
  readonly window?: NetworkWindow | null;
  /** App-level ping: browsers cannot send protocol pings, and idle sockets get cut by intermediaries. Default 25 s. */
  readonly pingIntervalMs?: number;
  /** From opening the socket to `connection_established`. Default 15 s. */
  readonly connectTimeoutMs?: number;
  /** The ticket request, body included. Default 10 s. */
  readonly ticketTimeoutMs?: number;
  /** The gateway's MAX_MESSAGE_BYTES: a bigger chat frame is refused by send() instead of ending the connection with 1009. Default 65536. */
  readonly maxMessageBytes?: number;
  /** Chat messages sent per second (burst: twice this), below the gateway's MAX_FRAMES_PER_SECOND. Default 10. */
  readonly messagesPerSecond?: number;
  /** Events buffered above a hole before the SDK gives up on the connection and reconnects. Default 1000. */
  readonly maxBufferedEvents?: number;
}

export interface SendOptions {
  readonly threadId: string;
  /** Default: a new UUID. Sending the same id again is idempotent (the gateway runs a message_id once). */
  readonly messageId?: string;
}

/** Why an attempt or a connection ended, and what to do about it. */
interface Failure {
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
}

interface OutboxEntry {
  readonly frame: ChatMessageFrame;
  /** The connection generation it was last sent on; resent on any other. */
  sentOn: number | undefined;
  /** Not before this time (after the gateway could not accept it). */
  notBefore: number;
}

type TimerName = "retry" | "connect" | "ping" | "resume" | "outbox" | "refresh";
type Listener<K extends keyof GatewayClientEvents> = (event: GatewayClientEvents[K]) => void;

const DEFAULTS = {
  pingIntervalMs: 25_000,
  connectTimeoutMs: 15_000,
  ticketTimeoutMs: 10_000,
  maxMessageBytes: 65_536,
  messagesPerSecond: 10,
  maxBufferedEvents: 1000,
};
/** How long the origin probe (see probeOrigin) may take. */
const PROBE_TIMEOUT_MS = 5000;
/** Retry delay after the gateway could not serve a resume or a chat message (§8.2). */
const STORE_RETRY_MS = 1000;
const MAX_ID_LENGTH = 128;
const OPEN = 1;
const noop = () => undefined;

export class GatewayClient {
  private readonly getToken: GatewayClientOptions["getToken"];
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly fetchImpl: typeof fetch;
  private readonly timers: Timers;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly network: NetworkWindow | undefined;
  private readonly backoff: Required<BackoffOptions>;
  private readonly settings: typeof DEFAULTS;
  private readonly ticketUrl: string;
  private readonly wsUrl: string;

  private readonly listeners = new Map<keyof GatewayClientEvents, Set<(event: never) => void>>();
  private readonly stream: EventStream<AgentEvent>;
  private readonly outbox = new Map<string, OutboxEntry>();
  private readonly pending = new Map<TimerName, unknown>();

  private currentState: ConnectionState = "closed";
  /** Between connect() and close() or a "stop" close. */
  private running = false;
  /** Bumped for every attempt and by close(): callbacks of an older generation are ignored. */
  private generation = 0;
  private socket: WebSocketLike | undefined;
  private established = false;
  private openedAt = 0;
  /** "connecting" is the first attempt only; after a failure or a drop it is "reconnecting". */
  private retrying = false;
  /** Consecutive failed attempts: the exponent of the backoff. */
  private attempt = 0;
  private forceRefresh = false;
  private waitingForNetwork = false;
  private awaitingPong = false;
  private resumePending = false;
  private connectionEpoch: string | undefined;
  private lastFatal: { code: string; message: string; retry: boolean | undefined } | undefined;
  /** A 401 was already answered with an immediate retry since the last ticket: the next one backs off. */
  private tokenRetried = false;
  private budget: number;
  private budgetAt = 0;
  /** The ticket request in flight, aborted by close(). */
  private ticketRequest: AbortController | undefined;

  constructor(options: GatewayClientOptions) {
    if (typeof options.getToken !== "function") throw new TypeError("GatewayClient: options.getToken is required");
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WebSocketImpl === undefined) {
      throw new TypeError("GatewayClient: no global WebSocket (Node 20): pass options.WebSocket, e.g. the `ws` package's");
    }
    if (options.lastSeq !== undefined && !(Number.isSafeInteger(options.lastSeq) && options.lastSeq >= 0)) {
      throw new RangeError("GatewayClient: options.lastSeq must be an integer ≥ 0");
    }
    const { ticketUrl, wsUrl } = endpoints(options.url);
    this.ticketUrl = ticketUrl;
    this.wsUrl = wsUrl;
    this.getToken = options.getToken;
    this.WebSocketImpl = WebSocketImpl;
    // Wrapped, not stored bare: a browser's fetch/setTimeout called as a method of another object throws "Illegal invocation".
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.timers = options.timers ?? {
      setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
    };
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.network = options.window === null ? undefined : (options.window ?? (globalThis as { window?: NetworkWindow }).window);
    this.backoff = { ...DEFAULT_BACKOFF, ...definedOnly(options.backoff ?? {}) };
    this.settings = {
      pingIntervalMs: options.pingIntervalMs ?? DEFAULTS.pingIntervalMs,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      ticketTimeoutMs: options.ticketTimeoutMs ?? DEFAULTS.ticketTimeoutMs,
      maxMessageBytes: options.maxMessageBytes ?? DEFAULTS.maxMessageBytes,
      messagesPerSecond: options.messagesPerSecond ?? DEFAULTS.messagesPerSecond,
      maxBufferedEvents: options.maxBufferedEvents ?? DEFAULTS.maxBufferedEvents,
    };
    this.budget = this.settings.messagesPerSecond * 2;
    this.stream = new EventStream<AgentEvent>(options.lastSeq, options.epoch);
  }

  // ── the app's side ──

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The last seq handed to the app, in order and without holes: persist it with `epoch` to resume after a reload. */
  get lastSeq(): number | undefined {
    return this.stream.lastSeq;
  }

  get epoch(): string | undefined {
    return this.stream.epoch;
  }

  /** Chat messages not yet acked, in the order they were sent. */
  get pendingMessageIds(): string[] {
    return [...this.outbox.keys()];
  }

  on<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as (event: never) => void);
    return () => this.off(type, listener);
  }

  off<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): void {
    this.listeners.get(type)?.delete(listener as (event: never) => void);
  }

  /** Starts connecting, and keeps the connection up until close() or a "stop" close. Idempotent. */
  connect(): void {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.retrying = false;
    this.watchNetwork(true);
    void this.startAttempt();
  }

  /** Stops everything: the socket, every timer, every retry. Unacked messages stay queued for a later connect(). */
  close(): void {
    const wasRunning = this.running;
    this.running = false;
    this.generation++;
    this.ticketRequest?.abort();
    this.dropSocket();
    for (const name of [...this.pending.keys()]) this.clearTimer(name);
    this.watchNetwork(false);
    this.waitingForNetwork = false;
    if (wasRunning || this.currentState !== "closed") this.setState({ state: "closed", errorCode: "CLOSED_BY_APP", reason: describe("CLOSED_BY_APP") });
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

  sendChatMessage(message: { text: string; threadId: string; messageId?: string }): string {
    const { text, threadId } = message;
    if (typeof text !== "string" || text.trim() === "") throw new TypeError("GatewayClient.send: text must be a non-empty string");
    if (!isId(threadId)) throw new TypeError(`GatewayClient.send: threadId must be a string of 1 to ${MAX_ID_LENGTH} characters`);
    const messageId = message.messageId ?? newMessageId();
    if (!isId(messageId)) throw new TypeError(`GatewayClient.send: messageId must be a string of 1 to ${MAX_ID_LENGTH} characters`);
    if (this.outbox.has(messageId)) return messageId;
    const frame: ChatMessageFrame = { type: "chat_message", message_id: messageId, thread_id: threadId, text };
    // Refused here rather than by the gateway: a 1009 would end the connection, and the message would never be acked.
    const bytes = new TextEncoder().encode(JSON.stringify(frame)).length;
    if (bytes > this.settings.maxMessageBytes) {
      throw new RangeError(`GatewayClient.send: the message is ${bytes} bytes; the gateway accepts at most ${this.settings.maxMessageBytes}`);
    }
    this.outbox.set(messageId, { frame, sentOn: undefined, notBefore: 0 });
    this.pumpOutbox();
    return messageId;
  }

  // ── one attempt: token → ticket → socket ──

  private async startAttempt(): Promise<void> {
    const gen = ++this.generation;
    this.clearTimer("retry");
    if (!this.running) return;
    if (this.isOffline()) return this.waitForNetwork();
    this.setState({ state: this.retrying ? "reconnecting" : "connecting", errorCode: "CONNECTING", reason: describe("CONNECTING") });

    const forceRefresh = this.forceRefresh;
    let token: string;
    try {
      token = await this.getToken({ forceRefresh });
    } catch (err) {
      if (gen === this.generation) this.fail({ errorCode: "TOKEN_UNAVAILABLE", action: "reconnect", message: messageOf(err) });
      return;
    }
    if (gen !== this.generation) return;
    this.forceRefresh = false;

    const ticket = await this.requestTicket(token, gen);
    if (gen !== this.generation) return;
    if (typeof ticket !== "string") return this.fail(ticket);
    this.openSocket(ticket, gen);
  }

  /** POST /api/v1/auth/websocket_ticket: the ticket, or why there is none. */
  private async requestTicket(token: string, gen: number): Promise<string | Failure> {
    const abort = new AbortController();
    this.ticketRequest = abort;
    const timer = this.timers.setTimeout(() => abort.abort(), this.settings.ticketTimeoutMs);
    let status: number;
    let body: unknown;
    let retryAfter: string | null;
    try {
      const response = await this.fetchImpl(this.ticketUrl, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        cache: "no-store",
        credentials: "omit",
        signal: abort.signal,
      });
      status = response.status;
      retryAfter = response.headers.get("retry-after");
      body = await response.json().catch(() => undefined);
    } catch (err) {
      if (abort.signal.aborted) return { errorCode: "TICKET_TIMEOUT", action: "reconnect" };
      if (gen === this.generation && (await this.probeOrigin(gen))) {
        return { errorCode: "ORIGIN_FORBIDDEN", action: "stop", code: 4500 };
      }
      return { errorCode: "NETWORK_ERROR", action: "reconnect", message: messageOf(err) };
    } finally {
      this.timers.clearTimeout(timer);
      if (this.ticketRequest === abort) this.ticketRequest = undefined;
    }

    const ticket = (body as { ticket?: unknown } | undefined)?.ticket;
    if (status === 201 && typeof ticket === "string" && ticket !== "") {
      this.tokenRetried = false;
      return ticket;
    }
    const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    const code = typeof error?.code === "string" && isErrorCode(error.code) ? error.code : undefined;
    const message = typeof error?.message === "string" ? error.message : `HTTP ${status}`;
    if (status === 401) {
      // TOKEN_EXPIRED (or a token the gateway cannot use): the next attempt asks the app for a fresh one.
      this.forceRefresh = true;
      const errorCode = code ?? "TOKEN_INVALID";
      // The app's cached token is often just stale (a restarted dev server's new key, a rotation): the first
      // refusal retries at once with a force-refreshed token; only a refusal of that one too backs off.
      const immediate = !this.tokenRetried && (errorCode === "TOKEN_INVALID" || errorCode === "TOKEN_EXPIRED");
      this.tokenRetried = true;
      return { errorCode, action: "reconnect", status, message, immediate };
    }
    if (status === 403) return { errorCode: code ?? "ORIGIN_FORBIDDEN", action: "stop", status, message };
    if (status === 429 || status === 503) {
      return {
        errorCode: code ?? (status === 429 ? "RATE_LIMITED" : "TICKET_STORE_UNAVAILABLE"),
        action: "reconnect",
        status,
        message,
        // The gateway always sets Retry-After (at least 1 s), but a browser hides it unless the CORS
        // response exposes it (Access-Control-Expose-Headers); then the contract's minimum stands in.
        retryAfterMs: parseRetryAfter(retryAfter, this.now()) ?? 1000,
      };
    }
    // Anything else (a proxy's 502, a misrouted 404) may pass: retry with backoff rather than give up for good.
    return { errorCode: code ?? "HTTP_ERROR", action: "reconnect", status, message };
  }

  /**
   * A browser refuses a CORS preflight without telling the script why: a
   * page on an origin the gateway does not allow sees the ticket request fail
   * exactly like a network outage, and would retry forever. WebSocket upgrades
   * are not subject to CORS, and the gateway checks the Origin of /ws before
   * the ticket (4500 ORIGIN_FORBIDDEN), so after a failed ticket request one
   * ticketless upgrade tells the two apart. Any other answer (4400 for an
   * allowed origin, 1006 when the gateway is down) means "network": retry.
   */
  private probeOrigin(gen: number): Promise<boolean> {
    return new Promise((resolve) => {
      let socket: WebSocketLike | undefined;
      let settled = false;
      const done = (forbidden: boolean) => {
        if (settled) return;
        settled = true;
        this.timers.clearTimeout(timer);
        if (socket) closeQuietly(socket);
        resolve(forbidden && gen === this.generation);
      };
      const timer = this.timers.setTimeout(() => done(false), PROBE_TIMEOUT_MS);
      try {
        socket = new this.WebSocketImpl(this.wsUrl);
      } catch {
        return done(false);
      }
      socket.onerror = noop;
      socket.onmessage = (event) => {
        const frame = parseFrame(event.data);
        done(frame?.type === "error" && frame.code === "ORIGIN_FORBIDDEN");
      };
      socket.onclose = (event) => done(event.code === 4500);
    });
  }

  private openSocket(ticket: string, gen: number): void {
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketImpl(`${this.wsUrl}?ticket=${encodeURIComponent(ticket)}`);
    } catch (err) {
      return this.fail({ errorCode: "NETWORK_ERROR", action: "reconnect", message: messageOf(err) });
    }
    this.socket = socket;
    this.established = false;
    this.lastFatal = undefined;
    socket.onerror = noop; // a close event follows every error
    socket.onmessage = (event) => {
      if (gen === this.generation) this.onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (gen === this.generation) this.onClose(event.code, event.reason);
    };
    this.setTimer("connect", this.settings.connectTimeoutMs, () => this.abandon("CONNECT_TIMEOUT"));
  }

  // ── frames ──

  private onFrame(data: unknown): void {
    this.awaitingPong = false; // any frame proves the socket alive
    const frame = parseFrame(data);
    if (frame === undefined) return;
    if (typeof (frame as { seq?: unknown }).seq === "number") return this.onAgentEvent(frame as unknown as AgentEvent);
    switch (frame.type) {
      case "connection_established":
        return this.onEstablished(frame);
      case "ack": {
        const entry = this.outbox.get(frame.message_id);
        if (!entry) return;
        this.outbox.delete(frame.message_id);
        this.emit("ack", { messageId: frame.message_id, threadId: entry.frame.thread_id });
        return;
      }
      case "resume_complete":
        this.resumePending = false;
        this.clearTimer("resume");
        // Resumed without an epoch (the app gave only lastSeq): the stream is this connection's from now on.
        if (this.stream.epoch === undefined && this.connectionEpoch !== undefined) this.stream.adoptEpoch(this.connectionEpoch);
        // The replay is done and a hole is still open: this connection will not fill it
        // (it never re-sends what it believes it sent). A new connection replays from lastSeq.
        if (this.stream.holeOpen) this.abandon("STREAM_GAP");
        return;
      case "resync_required":
        return this.onResync(frame);
      case "session_expiring":
        void this.refreshSession(this.generation);
        return;
      case "error":
        return this.onErrorFrame(frame);
      default:
        return; // pong, session_refreshed, and frame types added later
    }
  }

  private onEstablished(frame: Extract<ServerFrame, { type: "connection_established" }>): void {
    this.clearTimer("connect");
    this.established = true;
    this.openedAt = this.now();
    this.connectionEpoch = frame.epoch;
    if (this.stream.hasState) this.sendResume();
    else if (typeof frame.latest_seq === "number") this.stream.baseline(frame.latest_seq, frame.epoch);
    this.setState({ state: "open", errorCode: "CONNECTED", reason: describe("CONNECTED") });
    this.awaitingPong = false;
    this.schedulePing();
    this.pumpOutbox();
  }

  private onAgentEvent(event: AgentEvent): void {
    if (!this.established) return;
    const { deliver } = this.stream.accept(event);
    for (const e of deliver) this.emit("event", e);
    if (!this.stream.holeOpen) return;
    if (this.stream.buffered > this.settings.maxBufferedEvents) return this.abandon("STREAM_GAP");
    // One resume per hole: its replay fills every seq up to the head, whatever arrives meanwhile.
    if (!this.resumePending) this.sendResume();
  }

  private sendResume(): void {
    const lastSeq = this.stream.lastSeq;
    if (lastSeq === undefined) return;
    const epoch = this.stream.epoch;
    this.resumePending = true;
    this.sendFrame(epoch === undefined ? { type: "resume", last_seq: lastSeq } : { type: "resume", last_seq: lastSeq, epoch });
  }

  private onResync(frame: Extract<ServerFrame, { type: "resync_required" }>): void {
    this.resumePending = false;
    this.clearTimer("resume");
    const latestSeq = typeof frame.latest_seq === "number" ? frame.latest_seq : undefined;
    // A gateway older than §8.1 names no baseline: the next event sets it.
    if (latestSeq === undefined) this.stream.reset(frame.epoch);
    else this.stream.baseline(latestSeq, frame.epoch);
    this.emit("resync", { latestSeq, epoch: frame.epoch, reason: describe("HISTORY_UNAVAILABLE") });
  }

  private onErrorFrame(frame: Extract<ServerFrame, { type: "error" }>): void {
    const code: StatusCode = isErrorCode(frame.code) ? frame.code : "INTERNAL_ERROR";
    if (frame.fatal) {
      // The close follows; the action is this frame's code's (see onClose), whatever close code arrives.
      this.lastFatal = { code: frame.code, message: frame.message, retry: frame.retry };
      this.emit("error", { code, message: frame.message, fatal: true });
      return;
    }
    const entry = frame.message_id === undefined ? undefined : this.outbox.get(frame.message_id);
    if (entry && (code === "MESSAGE_REJECTED" || code === "CHAT_UNAVAILABLE")) {
      // §5a: a final refusal; sending it again would be refused again.
      this.outbox.delete(frame.message_id!);
    } else if (entry && (code === "AGENT_UNAVAILABLE" || code === "RATE_LIMITED" || code === "TICKET_STORE_UNAVAILABLE")) {
      // §5a, §8.2: the agent backend or the store did not take the message: not acked, send it again.
      entry.sentOn = undefined;
      entry.notBefore = this.now() + STORE_RETRY_MS + reconnectNowDelay(this.random(), this.backoff);
      this.pumpOutbox();
    } else if (code === "TICKET_STORE_UNAVAILABLE" && this.resumePending) {
      // §8.2: the store could not serve a resume: ask again.
      this.setTimer("resume", STORE_RETRY_MS + reconnectNowDelay(this.random(), this.backoff), () => this.sendResume());
    }
    if (code === "AUTH_UNAVAILABLE") {
      // The gateway could not check the token (its auth keys are unreachable), not a bad token:
      // try again after the delay with the app's current token (forceRefresh: false), not a new one.
      const delayMs = Math.max(1, frame.retry_after ?? 1) * 1000 + reconnectNowDelay(this.random(), this.backoff);
      const gen = this.generation;
      this.setTimer("refresh", delayMs, () => void this.refreshSession(gen, false));
    }
    this.emit("error", { code, message: frame.message, fatal: false, ...(frame.message_id === undefined ? {} : { messageId: frame.message_id }) });
  }

  private async refreshSession(gen: number, forceRefresh = true): Promise<void> {
    let token: string;
    try {
      token = await this.getToken({ forceRefresh });
    } catch (err) {
      // The session then ends with 4408, and the reconnect asks for a token again.
      this.emit("error", { code: "TOKEN_UNAVAILABLE", message: messageOf(err), fatal: false });
      return;
    }
    if (gen === this.generation) this.sendFrame({ type: "refresh_session", token });
  }

  // ── outbound ──

  private sendFrame(frame: object): boolean {
    const socket = this.socket;
    if (!socket || !this.established || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends what the outbox holds that this connection has not been sent, paced
   * by a token bucket below the gateway's frame limit: a reconnect with a long
   * outbox must not be closed with 4429 and then do the same again.
   */
  private pumpOutbox(): void {
    this.clearTimer("outbox");
    if (!this.established) return;
    const now = this.now();
    const rate = this.settings.messagesPerSecond;
    this.budget = Math.min(rate * 2, this.budget + ((now - this.budgetAt) / 1000) * rate);
    this.budgetAt = now;
    let wakeAt = Infinity;
    for (const entry of this.outbox.values()) {
      if (entry.sentOn === this.generation) continue;
      if (entry.notBefore > now) {
        wakeAt = Math.min(wakeAt, entry.notBefore);
        continue;
      }
      if (this.budget < 1) {
        wakeAt = Math.min(wakeAt, now + ((1 - this.budget) / rate) * 1000);
        break;
      }
      if (!this.sendFrame(entry.frame)) return;
      entry.sentOn = this.generation;
      this.budget -= 1;
    }
    if (wakeAt !== Infinity) this.setTimer("outbox", Math.max(0, Math.ceil(wakeAt - now)), () => this.pumpOutbox());
  }

  /** A ping per interval; a ping that is not answered (by anything) before the next one means the socket is dead. */
  private schedulePing(): void {
    this.setTimer("ping", this.settings.pingIntervalMs, () => {
      if (this.awaitingPong) return this.abandon("HEARTBEAT_TIMEOUT");
      this.awaitingPong = true;
      this.sendFrame({ type: "ping" });
      this.schedulePing();
    });
  }

  // ── closes and retries ──

  private onClose(code: number, reason: string): void {
    const wasOpen = this.established;
    if (wasOpen && this.now() - this.openedAt >= this.backoff.stableAfterMs) this.attempt = 0;
    const fatal = this.lastFatal;
    const named = fatal?.code ?? reason;
    this.fail({
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
  private abandon(errorCode: StatusCode): void {
    if (this.established && this.now() - this.openedAt >= this.backoff.stableAfterMs) this.attempt = 0;
    this.generation++;
    this.fail({ errorCode, action: "reconnect" });
  }

  private fail(failure: Failure): void {
    if (!this.running) return;
    this.retrying = true;
    this.dropSocket();
    const reason = describe(failure.errorCode);
    const code = failure.code === undefined ? {} : { code: failure.code };
    if (!failure.reported) {
      this.emit("error", {
        code: failure.errorCode,
        message: failure.message ?? reason,
        fatal: true,
        ...(failure.status === undefined ? {} : { status: failure.status }),
      });
    }
    if (failure.action === "stop") {
      this.running = false;
      this.generation++;
      for (const name of [...this.pending.keys()]) this.clearTimer(name);
      this.watchNetwork(false);
      this.setState({ state: "closed", errorCode: failure.errorCode, reason, ...code });
      return;
    }

    let delay: number;
    if (failure.immediate) {
      delay = 0;
    } else if (failure.action === "reconnect_now" && failure.wasOpen) {
      delay = reconnectNowDelay(this.random(), this.backoff);
    } else if (failure.action === "refresh_token") {
      this.forceRefresh = true;
      delay = failure.wasOpen ? reconnectNowDelay(this.random(), this.backoff) : backoffDelay(this.attempt++, this.random(), this.backoff);
    } else {
      delay = backoffDelay(this.attempt++, this.random(), this.backoff);
      if (failure.retryAfterMs !== undefined) delay = Math.max(delay, failure.retryAfterMs);
    }
    if (this.isOffline()) return this.waitForNetwork();
    this.setState({ state: "reconnecting", errorCode: failure.errorCode, reason, ...code, retryInMs: delay });
    this.setTimer("retry", delay, () => void this.startAttempt());
  }

  /** Detaches and closes the current socket; its events no longer reach the client. */
  private dropSocket(): void {
    const socket = this.socket;
    this.socket = undefined;
    this.established = false;
    this.resumePending = false;
    this.awaitingPong = false;
    for (const name of ["connect", "ping", "resume", "outbox", "refresh"] as const) this.clearTimer(name);
    if (socket) closeQuietly(socket);
  }

  // ── the network ──

  private readonly onOnline = (): void => {
    if (!this.running || (!this.waitingForNetwork && !this.pending.has("retry"))) return;
    // Back on the network: try now (with a little jitter) instead of sitting out a long backoff.
    this.waitingForNetwork = false;
    const delay = reconnectNowDelay(this.random(), this.backoff);
    this.setState({ state: "reconnecting", errorCode: "CONNECTING", reason: "back online, reconnecting…", retryInMs: delay });
    this.setTimer("retry", delay, () => void this.startAttempt());
  };

  private readonly onOffline = (): void => {
    // A pending retry would only fail: wait for `online` instead. An open socket is left alone (it may well survive).
    if (this.running && this.pending.has("retry")) this.waitForNetwork();
  };

  private isOffline(): boolean {
    return this.network?.navigator?.onLine === false;
  }

  private waitForNetwork(): void {
    this.clearTimer("retry");
    this.waitingForNetwork = true;
    this.setState({ state: "reconnecting", errorCode: "OFFLINE", reason: describe("OFFLINE") });
  }

  private watchNetwork(on: boolean): void {
    if (!this.network) return;
    if (on) {
      this.network.addEventListener("online", this.onOnline);
      this.network.addEventListener("offline", this.onOffline);
    } else {
      this.network.removeEventListener("online", this.onOnline);
      this.network.removeEventListener("offline", this.onOffline);
    }
  }

  // ── plumbing ──

  private setState(change: StateChange): void {
    this.currentState = change.state;
    this.emit("state", change);
  }

  private emit<K extends keyof GatewayClientEvents>(type: K, event: GatewayClientEvents[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<K>)(event);
      } catch (err) {
        // An app bug must not break the connection's bookkeeping; report it like an event listener's error.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  private setTimer(name: TimerName, ms: number, callback: () => void): void {
    this.clearTimer(name);
    const handle = this.timers.setTimeout(() => {
      this.pending.delete(name);
      callback();
    }, ms);
    this.pending.set(name, handle);
  }

  private clearTimer(name: TimerName): void {
    if (!this.pending.has(name)) return;
    this.timers.clearTimeout(this.pending.get(name));
    this.pending.delete(name);
  }
}

/** `https://host/prefix` → the ticket endpoint and the WebSocket endpoint under it. */
function endpoints(url: string): { ticketUrl: string; wsUrl: string } {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new TypeError(`GatewayClient: options.url is not a URL: ${url}`);
  }
  const secure = base.protocol === "https:" || base.protocol === "wss:";
  if (!["http:", "https:", "ws:", "wss:"].includes(base.protocol)) throw new TypeError("GatewayClient: options.url must be http(s) or ws(s)");
  const path = base.pathname.endsWith("/") ? base.pathname : `${base.pathname}/`;
  const root = `//${base.host}${path}`;
  return { ticketUrl: `${secure ? "https:" : "http:"}${root}api/v1/auth/websocket_ticket`, wsUrl: `${secure ? "wss:" : "ws:"}${root}ws` };
}

/**
 * The action a fatal error frame names: its code's row of the table, or, for
 * a code this SDK does not know (a newer gateway), "stop" when the frame says
 * `retry: false`. Undefined: let the close code decide.
 */
function fatalFrameAction(frame: { code: string; retry: boolean | undefined }): CloseAction | undefined {
  if (isErrorCode(frame.code)) return errorAction(frame.code);
  return frame.retry === false ? "stop" : undefined;
}

function parseFrame(data: unknown): ServerFrame | undefined {
  if (typeof data !== "string") return undefined; // the gateway sends text frames only
  try {
    const value: unknown = JSON.parse(data);
    return typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string" ? (value as ServerFrame) : undefined;
  } catch {
    return undefined;
  }
}

function closeQuietly(socket: WebSocketLike): void {
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

function isId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_ID_LENGTH;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** crypto.randomUUID exists only in secure contexts; getRandomValues everywhere. */
function newMessageId(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
