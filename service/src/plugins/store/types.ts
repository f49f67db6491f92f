/**
 * The one contract of shared state between gateway instances. Two
 * implementations pass the same contract suite (test/integration/store-contract.test.ts):
 * `createRedisStore` (production, many instances) and `createMemoryStore`
 * (`npm run dev`, one instance). Nothing outside plugins/store knows Redis.
 *
 * Every key that one operation touches lies in one hash slot, so the same
 * scripts run unchanged on Redis Cluster: a user's keys use `{u:<user_id>}`,
 * a ticket's keys a tag of its user's slot (TicketKey).
 *
 * Every method rejects with `StoreUnavailableError` when the store cannot
 * answer within `commandTimeoutMs` (1 s), instead of hanging.
 */

export const AGENT_EVENT_TYPES = [
  "agent_started",
  "agent_thinking",
  "tool_executing",
  "tool_completed",
  "agent_completed",
  "agent_error",
] as const;
export type AgentEventType = (typeof AGENT_EVENT_TYPES)[number];

/** An agent event as a publisher hands it in: everything but `seq`. */
export interface AgentEventInput {
  readonly type: AgentEventType;
  readonly event_id: string;
  readonly run_id: string;
  readonly thread_id: string;
  /** ISO-8601 time of publication. */
  readonly ts: string;
  readonly data: Record<string, unknown>;
}

/**
 * A stored or delivered event. `body` is `JSON.stringify(AgentEventInput)`, kept
 * as a string so that fan-out never re-serialises: the frame sent to a socket
 * is `{"seq":N,` + body.slice(1).
 */
export interface StoredEvent {
  readonly seq: number;
  readonly body: string;
}

/**
 * What a ticket is bound to. Only the SHA-256 of the ticket is a key; the
 * ticket itself is never stored.
 */
export interface TicketRecord {
  /** The user id (`sub` of the token the ticket was issued for). */
  readonly sub: string;
  /** The token's `exp`, epoch milliseconds: the session ends there. */
  readonly sessionExpiresAt: number;
  /** The `Origin` of the issuing request, or null when none was sent. */
  readonly origin: string | null;
  /** Epoch milliseconds. */
  readonly issuedAt: number;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
}

/** What an issuance is held to (see Store.issueTicket). */
export interface TicketIssueRules {
  /** At most this many tickets per user in a fixed window of `windowMs`, counted on every instance. */
  readonly perUser: number;
  readonly windowMs: number;
  /** The token's `iat` (epoch ms), if it has one: checked against the user's tokens-not-before marker. */
  readonly tokenIssuedAt?: number;
}

export type IssueOutcome =
  | { readonly status: "issued" }
  /** Over the per-user limit: nothing written; the window resets in `resetInMs`. */
  | { readonly status: "rate_limited"; readonly resetInMs: number }
  /** The token was issued before the user's not-before marker (or has no `iat` while one is in force): nothing written. */
  | { readonly status: "token_revoked" };

/**
 * Where an admission ticket is kept: the SHA-256 of the ticket, and a slot in
 * [0, 16384), the hash slot of its user's keys (keys.ts userSlot), so that one
 * atomic step can take the ticket and admit the user's connection on Redis
 * Cluster. The memory store keys on both, so a wrong slot finds nothing there too.
 */
export interface TicketKey {
  readonly hash: string;
  readonly slot: number;
}

/** Why admission refused a ticket it took (the ticket is spent all the same). */
export type AdmitRefusal = "TICKET_EXPIRED" | "ORIGIN_FORBIDDEN" | "SESSION_REVOKED" | "SESSION_EXPIRED" | "TOO_MANY_CONNECTIONS";

export interface AdmitRequest {
  readonly ticket: TicketKey;
  /** The upgrade request's `Origin`, or null. */
  readonly origin: string | null;
  /** Epoch ms the ticket's and the session's expiries are judged against. */
  readonly nowMs: number;
  /** Registered among the user's connections (as addConnection does) when admitted. */
  readonly connectionId: string;
  readonly maxConnections: number;
  readonly connectionTtlMs: number;
}

export type AdmitOutcome =
  /** Taken, every check passed, the connection counted; `head` was read after all that, in the same step. */
  | { readonly status: "admitted"; readonly record: TicketRecord; readonly head: StreamHead }
  | { readonly status: "refused"; readonly reason: AdmitRefusal }
  | { readonly status: "used" }
  | { readonly status: "unknown" };

/** A user's stream state: the latest seq and the epoch of the counter. */
export interface StreamHead {
  /** 0 when the user has no events yet. */
  readonly latestSeq: number;
  /**
   * Created the first time the user's stream is read or written, and changes
   * whenever the seq counter is created anew after the store lost its data
   * (e.g. a BASIC-tier Memorystore restart). A client
   * that resumes across an epoch change must resync; it is never silently
   * handed a different stream's seqs.
   */
  readonly epoch: string;
}

export interface HistoryRead extends StreamHead {
  /** Events with seq > afterSeq, ascending, contiguous. */
  readonly events: readonly StoredEvent[];
  /**
   * True when `events` holds every seq in (afterSeq, latestSeq]. False when
   * the history was trimmed (count or age) past the gap, or afterSeq > latestSeq.
   */
  readonly complete: boolean;
}

/** A message on the bus, as delivered to subscribers. */
export type BusMessage =
  | { readonly kind: "event"; readonly userId: string; readonly epoch: string; readonly event: StoredEvent }
  /** Published with publishUserControl: reaches every instance that has a socket of the user. */
  | { readonly kind: "user_control"; readonly userId: string; readonly payload: string }
  /** Published with publishInstance to this instance's own channel. */
  | { readonly kind: "instance_control"; readonly payload: string };

export type ClaimOutcome = "claimed" | "started" | "pending";

export interface HistoryLimits {
  readonly maxEvents: number;
  readonly ttlMs: number;
}

export interface Store {
  readonly kind: "redis" | "memory";

  // ── tickets ──
  /**
   * The ticket endpoint's store work in one step: counts the request against
   * the user's limit, refuses a token revoked by revokeTokensBefore
   * (the same rule as tokensNotBefore, fail closed), and only then stores the
   * record under its TicketKey (the user's slot), where admit takes it. A
   * refused request still counts against the limit.
   */
  issueTicket(key: TicketKey, record: TicketRecord, ttlMs: number, rules: TicketIssueRules): Promise<IssueOutcome>;
  /**
   * The happy path of a connect in one atomic step (one round trip): takes the
   * ticket (exactly one caller ever gets past this, across all instances),
   * checks it (rules.ts admissionRefusal), registers the connection under the
   * per-user limit (addConnection's rule), and reads the stream head.
   */
  admit(request: AdmitRequest): Promise<AdmitOutcome>;

  // ── rate limits ──
  /** Counts one hit in the fixed window of `windowMs` for `key`; returns the count and ms until the window resets. */
  hit(key: string, windowMs: number): Promise<{ count: number; resetInMs: number }>;

  /** hit for `hits` hits at once (a count batched by the caller). */
  addHits(key: string, hits: number, windowMs: number): Promise<{ count: number; resetInMs: number }>;

  // ── users ──
  /** Records that every session and ticket of the user issued at or before `atMs` is revoked. Kept for `keepMs`. */
  revokeUser(userId: string, atMs: number, keepMs: number): Promise<void>;
  /** Epoch ms of the user's last revocation, or 0. A marker that is not a number reads as "revoked forever" (fail closed). */
  revokedAt(userId: string): Promise<number>;
  /**
   * Refuses the user's tokens issued (`iat`) before `notBeforeMs`, for
   * `keepMs`. A later call with an earlier time never undoes a later one.
   */
  revokeTokensBefore(userId: string, notBeforeMs: number, keepMs: number): Promise<void>;
  /** Epoch ms before which the user's tokens are refused, or 0. Not a number: refuse every token (fail closed). */
  tokensNotBefore(userId: string): Promise<number>;
  /**
   * Registers a connection if the user has fewer than `max` live ones across
   * all instances. An entry lives `ttlMs` unless refreshed, so a crashed
   * instance's connections stop counting by themselves.
   */
  addConnection(userId: string, connectionId: string, max: number, ttlMs: number): Promise<boolean>;
  removeConnection(userId: string, connectionId: string): Promise<void>;
  refreshConnections(entries: ReadonlyArray<{ userId: string; connectionId: string }>, ttlMs: number): Promise<void>;
  /**
   * Claims a chat message for its hand-off to the agent backend, so a message
   * resent after a reconnect is handed off once it was accepted no more.
   * "claimed": this caller hands it off. "started": the backend accepted it
   * (ack it, do not hand it off again). "pending": another hand-off claimed it
   * less than `staleMs` ago and has not finished; the caller answers "send
   * again", and after `staleMs` a claim takes it over (an instance that died
   * mid-hand-off does not block the message).
   */
  claimMessage(userId: string, messageId: string, options: { ttlMs: number; staleMs: number }): Promise<ClaimOutcome>;
  /**
   * Marks a claimed message as accepted by the backend. At most `maxPerUser`
   * ids are kept per user, each for at most `ttlMs`: the oldest go first, so
   * the memory a user can make the store hold is bounded.
   */
  markMessageStarted(userId: string, messageId: string, options: { ttlMs: number; maxPerUser: number }): Promise<void>;
  /** Drops a claim whose hand-off failed, so the client's resend is handed off at once. An accepted id stays. */
  releaseMessage(userId: string, messageId: string): Promise<void>;

  // ── events ──
  /**
   * In one atomic step: assigns the user's next seq (1, 2, 3, … with no holes),
   * appends the event to the user's history (trimmed exactly to the limits),
   * and publishes it on the user's channel.
   */
  publishEvent(userId: string, event: AgentEventInput, limits: HistoryLimits): Promise<{ seq: number; epoch: string }>;
  /**
   * publishEvent for several events of one user in one atomic step (one
   * round trip): they get the contiguous seqs firstSeq, firstSeq + 1, … in
   * the order given, and are published on the channel in that order.
   */
  publishEvents(userId: string, events: readonly AgentEventInput[], limits: HistoryLimits): Promise<{ firstSeq: number; epoch: string }>;
  head(userId: string): Promise<StreamHead>;
  /** The stream head and the revocation time (0 if none; not a number: revoked forever) in one read. */
  userState(userId: string): Promise<{ head: StreamHead; revokedAt: number }>;

  /** The user's events with seq > afterSeq that the history still holds (see HistoryRead.complete). */
  readHistory(userId: string, afterSeq: number, limits: HistoryLimits): Promise<HistoryRead>;

  // ── bus ──
  /**
   * Receives the user's events (and control messages on the user's channel).
   * Reference-counted per user: every call counts, even one that rejected, and
   * is released by exactly one unsubscribeUser. Subscriptions still wanted are
   * restored after a reconnect.
   */
  subscribeUser(userId: string): Promise<void>;
  /** Never rejects: the local reference count is the truth. */
  unsubscribeUser(userId: string): Promise<void>;
  /** Publishes a control payload to the user's channel; resolves to the number of instances subscribed to it. */
  publishUserControl(userId: string, payload: string): Promise<number>;
  /** A channel of this instance's own, for replies. */
  subscribeInstance(instanceId: string): Promise<void>;
  publishInstance(instanceId: string, payload: string): Promise<void>;
  /** One handler for everything the bus delivers. */
  onMessage(handler: (message: BusMessage) => void): void;
  /**
   * The bus counts as up until its first drop. Called with false when the bus
   * connection drops and true when it is back
   * (with every subscription restored). After a drop, events may have been
   * missed: the hub then catches every connection up from history.
   */
  onBusStatus(handler: (up: boolean) => void): void;

  // ── health ──
  /** Resolves when both the command connection and the bus answer. */
  check(): Promise<{ store: boolean; bus: boolean }>;
  close(): Promise<void>;
}

/**
 * The store answered, with an error: a command the store refuses (a key of
 * the wrong type, a script error). That is a bug, not an outage: it becomes
 * 500 / 1011 and a log line with the store's message, never a 503 "retry".
 */
export class StoreCommandError extends Error {
  constructor(message: string) {
    super(`store command failed: ${message}`);
    this.name = "StoreCommandError";
  }
}

export class StoreUnavailableError extends Error {
  constructor(cause?: unknown) {
    super("store unavailable", cause === undefined ? undefined : { cause });
    this.name = "StoreUnavailableError";
  }
}
