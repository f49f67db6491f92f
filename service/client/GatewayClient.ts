/**
 * GatewayClient: the browser (and Node) SDK of the chat gateway
 * (docs/protocol.md). Dependency-free; it imports from the service only the
 * error table and the protocol's shared rules, so the client and the gateway
 * read one set of close codes and rules.
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
import { Connection, type ConnectionHost } from "./connection.js";
import { Emitter, type Listener } from "./emitter.js";
import { fatalFrameAction, messageOf, type Failure } from "./failure.js";
import { assertFits, chatFrame, createOutbox, type ChatMessage, type Outbox } from "./outbox.js";
import { describe, isErrorCode } from "./reasons.js";
import { RetryPolicy } from "./retry.js";
import { resolveSettings, type GatewayClientOptions, type Settings } from "./settings.js";
import { EventStream } from "./stream.js";
import { createTicketRequester, type TicketRequester } from "./ticket.js";
import { TimerSet } from "./timers.js";
import type { AgentEvent, ConnectionState, GatewayClientEvents, StateChange, StatusCode } from "./types.js";

export type { GatewayClientOptions };

export interface SendOptions {
  readonly threadId: string;
  /** Default: a new UUID. Sending the same id again is idempotent (the gateway runs a message_id once). */
  readonly messageId?: string;
}

export class GatewayClient {
  readonly #settings: Settings;
  readonly #events = new Emitter();
  readonly #stream: EventStream<AgentEvent>;
  readonly #outbox: Outbox;
  readonly #tickets: TicketRequester;
  readonly #retry: RetryPolicy;
  /** The retry timer outlives sockets; a connection's own timers go with it. */
  readonly #timers: TimerSet<"retry">;
  readonly #host: ConnectionHost;

  #currentState: ConnectionState = "closed";
  /** Between connect() and close() or a "stop" close. */
  #running = false;
  /** Bumped for every attempt and by close(): callbacks of an older generation are ignored. */
  #generation = 0;
  #link: Connection | undefined;
  /** "connecting" is the first attempt only; after a failure or a drop it is "reconnecting". */
  #retrying = false;
  #waitingForNetwork = false;

  constructor(options: GatewayClientOptions) {
    const s = (this.#settings = resolveSettings(options));
    this.#timers = new TimerSet(s.timers);
    this.#retry = new RetryPolicy(s);
    this.#stream = new EventStream<AgentEvent>(options.lastSeq, options.epoch);
    this.#outbox = createOutbox({ now: s.now, perSecond: s.messagesPerSecond, retryDelay: () => this.#retry.storeRetryDelay() });
    this.#tickets = createTicketRequester({ ...s, timeoutMs: s.ticketTimeoutMs });
    this.#host = {
      settings: s,
      stream: this.#stream,
      outbox: this.#outbox,
      events: this.#events,
      retry: this.#retry,
      opened: () => this.#setState({ state: "open", errorCode: "CONNECTED", reason: describe("CONNECTED") }),
      closed: (code, reason) => this.#onClose(code, reason),
      abandon: (errorCode) => this.#abandon(errorCode),
    };
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
    this.#retry.restart();
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
    this.#link?.pumpOutbox();
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
      token = await this.#settings.getToken({ forceRefresh: this.#retry.freshToken });
    } catch (err) {
      if (gen === this.#generation) this.#fail({ errorCode: "TOKEN_UNAVAILABLE", action: "reconnect", message: messageOf(err) });
      return;
    }
    if (gen !== this.#generation) return;
    this.#retry.freshToken = false;

    const ticket = await this.#tickets.request(token, () => gen === this.#generation);
    if (typeof ticket !== "string" && ticket.refreshToken) this.#retry.freshToken = true;
    if (gen !== this.#generation) return;
    if (typeof ticket !== "string") return this.#fail(ticket);
    this.#openSocket(ticket, gen);
  }

  #openSocket(ticket: string, gen: number): void {
    try {
      this.#link = new Connection(this.#host, ticket, gen);
    } catch (err) {
      this.#fail({ errorCode: "NETWORK_ERROR", action: "reconnect", message: messageOf(err) });
    }
  }

  // ── closes and retries ──

  #onClose(code: number, reason: string): void {
    const upSince = this.#link?.upSince;
    this.#retry.noteUptime(upSince);
    const fatal = this.#link?.fatal;
    const named = fatal?.code ?? reason;
    this.#fail({
      errorCode: isErrorCode(named) ? named : "CONNECTION_LOST",
      action: (fatal && fatalFrameAction(fatal)) ?? closeAction(code),
      code,
      wasOpen: upSince !== undefined,
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
    this.#retry.noteUptime(this.#link?.upSince);
    this.#generation++;
    this.#fail({ errorCode, action: "reconnect" });
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
    const delay = this.#retry.delayAfter(failure);
    if (this.#isOffline()) return this.#waitForNetwork();
    this.#setState({ state: "reconnecting", errorCode: failure.errorCode, reason, ...code, retryInMs: delay });
    this.#timers.set("retry", delay, () => void this.#startAttempt());
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
    link?.drop();
  }

  // ── the network ──

  readonly #onOnline = (): void => {
    if (!this.#running || (!this.#waitingForNetwork && !this.#timers.has("retry"))) return;
    // Back on the network: try now (with a little jitter) instead of sitting out a long backoff.
    this.#waitingForNetwork = false;
    const delay = this.#retry.jitter();
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
