/**
 * The Store in process memory, for `npm run dev`: one instance, no Redis.
 * Same contract as the Redis store (one suite tests both): expiries are
 * judged lazily against `now()`, so tests move an injected clock instead of
 * sleeping, and an unref'd sweep keeps memory bounded. The bus delivers on a
 * later turn of the event loop, in publish order, as Redis would.
 */
import { admissionRefusal, asPlainStore, historyRead, newEpoch, refusedByNotBefore, TICKET_GRACE_MS, TICKET_USED_MARKER_MS } from "./rules.js";
import {
  StoreUnavailableError,
  type AdmitOutcome,
  type AdmitRequest,
  type AgentEventInput,
  type BusMessage,
  type ClaimOutcome,
  type HistoryLimits,
  type HistoryRead,
  type IssueOutcome,
  type Store,
  type StoredEvent,
  type StreamHead,
  type TicketIssueRules,
  type TicketKey,
  type TicketRecord,
} from "./types.js";

export interface MemoryStoreOptions {
  /** Epoch milliseconds; default Date.now. */
  readonly now?: () => number;
  /** Where an exception thrown by a bus handler is reported. */
  readonly logger?: { warn(obj: object, msg: string): void };
}

const SWEEP_INTERVAL_MS = 30_000;

interface Stream {
  n: number;
  ttlMs: number;
  events: Array<StoredEvent & { at: number }>;
}

/** A "later wins" marker (a revocation), kept until expiresAt. */
interface Marker {
  at: number;
  expiresAt: number;
}

export function createMemoryStore(options: MemoryStoreOptions = {}): Store {
  return asPlainStore(new MemoryStore(options));
}

class MemoryStore implements Store {
  readonly kind = "memory";
  private readonly now: () => number;
  // Fixed for the life of the store: a fresh store (a restarted dev server) is a fresh stream.
  private readonly epoch = newEpoch();

  private readonly tickets = new Map<string, { json: string; expiresAt: number }>();
  private readonly usedTickets = new Map<string, number>();
  private readonly windows = new Map<string, { count: number; resetAt: number }>();
  /** Per-user ticket counters: apart from `windows`, as Redis keeps them in the user's keys. */
  private readonly ticketWindows = new Map<string, { count: number; resetAt: number }>();
  private readonly revocations = new Map<string, Marker>();
  private readonly tokenRevocations = new Map<string, Marker>();
  private readonly connections = new Map<string, Map<string, number>>();
  /** Accepted chat message ids per user, oldest first (a Map keeps insertion order): id → when accepted. */
  private readonly accepted = new Map<string, Map<string, number>>();
  /** Hand-offs in progress: claim key → when claimed. */
  private readonly claims = new Map<string, number>();
  // Counters are never dropped: a counter that restarted at 1 within the same epoch would hand out old seqs again.
  private readonly streams = new Map<string, Stream>();
  private readonly userRefs = new Map<string, number>();
  private readonly instances = new Set<string>();
  private readonly handlers: ((message: BusMessage) => void)[] = [];
  private closed = false;
  // The ttl of accepted ids, as last given (the gateway passes one value), for the sweep.
  private acceptedTtlMs = 24 * 3600_000;
  private claimStaleMs = 10_000;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly options: MemoryStoreOptions) {
    this.now = options.now ?? Date.now;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  async issueTicket(key: TicketKey, record: TicketRecord, ttlMs: number, rules: TicketIssueRules): Promise<IssueOutcome> {
    this.open();
    const { count, resetInMs } = this.count(this.ticketWindows, record.sub, rules.windowMs);
    if (count > rules.perUser) return { status: "rate_limited", resetInMs };
    if (refusedByNotBefore(this.markerAt(this.tokenRevocations, record.sub), rules.tokenIssuedAt)) return { status: "token_revoked" };
    // Stored as JSON, like Redis: the caller's object is not shared.
    this.tickets.set(admissionKey(key), { json: JSON.stringify(record), expiresAt: this.now() + ttlMs + TICKET_GRACE_MS });
    return { status: "issued" };
  }

  async admit(request: AdmitRequest): Promise<AdmitOutcome> {
    this.open();
    const record = this.takeTicket(admissionKey(request.ticket));
    if (typeof record === "string") return { status: record };
    const revokedAt = this.markerAt(this.revocations, record.sub);
    const refusal = admissionRefusal(record, { nowMs: request.nowMs, origin: request.origin, revokedAt });
    if (refusal !== undefined) return { status: "refused", reason: refusal };
    const conns = this.liveConnections(record.sub);
    if (conns.size >= request.maxConnections) return { status: "refused", reason: "TOO_MANY_CONNECTIONS" };
    conns.set(request.connectionId, this.now() + request.connectionTtlMs);
    return { status: "admitted", record, head: { latestSeq: this.streams.get(record.sub)?.n ?? 0, epoch: this.epoch } };
  }

  async addHits(key: string, hits: number, windowMs: number) {
    this.open();
    return this.count(this.windows, key, windowMs, hits);
  }

  async hit(key: string, windowMs: number) {
    this.open();
    return this.count(this.windows, key, windowMs);
  }

  async revokeUser(userId: string, atMs: number, keepMs: number): Promise<void> {
    this.open();
    this.markLater(this.revocations, userId, atMs, keepMs);
  }

  async revokedAt(userId: string): Promise<number> {
    this.open();
    return this.markerAt(this.revocations, userId);
  }

  async revokeTokensBefore(userId: string, notBeforeMs: number, keepMs: number): Promise<void> {
    this.open();
    this.markLater(this.tokenRevocations, userId, notBeforeMs, keepMs);
  }

  async tokensNotBefore(userId: string): Promise<number> {
    this.open();
    return this.markerAt(this.tokenRevocations, userId);
  }

  async addConnection(userId: string, connectionId: string, max: number, ttlMs: number): Promise<boolean> {
    this.open();
    const conns = this.liveConnections(userId);
    if (!conns.has(connectionId) && conns.size >= max) return false;
    conns.set(connectionId, this.now() + ttlMs);
    return true;
  }

  async removeConnection(userId: string, connectionId: string): Promise<void> {
    this.open();
    this.connections.get(userId)?.delete(connectionId);
  }

  async refreshConnections(entries: readonly { userId: string; connectionId: string }[], ttlMs: number): Promise<void> {
    this.open();
    for (const { userId, connectionId } of entries) this.liveConnections(userId).set(connectionId, this.now() + ttlMs);
  }

  async claimMessage(userId: string, messageId: string, options: { ttlMs: number; staleMs: number }): Promise<ClaimOutcome> {
    this.open();
    this.acceptedTtlMs = options.ttlMs;
    this.claimStaleMs = options.staleMs;
    const at = this.accepted.get(userId)?.get(messageId);
    if (at !== undefined && this.live(at + options.ttlMs)) return "started";
    const key = claimKey(userId, messageId);
    const claimedAt = this.claims.get(key);
    if (claimedAt !== undefined && this.now() - claimedAt < options.staleMs) return "pending";
    this.claims.set(key, this.now());
    return "claimed";
  }

  async markMessageStarted(userId: string, messageId: string, options: { ttlMs: number; maxPerUser: number }): Promise<void> {
    this.open();
    this.claims.delete(claimKey(userId, messageId));
    let ids = this.accepted.get(userId);
    if (ids === undefined) this.accepted.set(userId, (ids = new Map()));
    ids.delete(messageId); // re-inserted as the newest
    ids.set(messageId, this.now());
    for (const [id, at] of ids) {
      if (ids.size <= options.maxPerUser && this.live(at + options.ttlMs)) break;
      ids.delete(id);
    }
  }

  async releaseMessage(userId: string, messageId: string): Promise<void> {
    this.open();
    this.claims.delete(claimKey(userId, messageId));
  }

  async publishEvent(userId: string, event: AgentEventInput, limits: HistoryLimits) {
    this.open();
    const { firstSeq, epoch } = this.append(userId, [event], limits);
    return { seq: firstSeq, epoch };
  }

  async publishEvents(userId: string, events: readonly AgentEventInput[], limits: HistoryLimits) {
    this.open();
    if (events.length === 0) throw new RangeError("publishEvents needs at least one event");
    return this.append(userId, events, limits);
  }

  async head(userId: string): Promise<StreamHead> {
    this.open();
    return { latestSeq: this.streams.get(userId)?.n ?? 0, epoch: this.epoch };
  }

  async userState(userId: string): Promise<{ head: StreamHead; revokedAt: number }> {
    this.open();
    return { head: { latestSeq: this.streams.get(userId)?.n ?? 0, epoch: this.epoch }, revokedAt: this.markerAt(this.revocations, userId) };
  }

  async readHistory(userId: string, afterSeq: number, limits: HistoryLimits): Promise<HistoryRead> {
    this.open();
    const stream = this.streams.get(userId);
    const latestSeq = stream?.n ?? 0;
    const gap = latestSeq - afterSeq;
    const events: StoredEvent[] =
      stream === undefined || gap <= 0 || gap > limits.maxEvents
        ? []
        : this.heldEvents(stream, limits.ttlMs)
            .filter((e) => e.seq > afterSeq)
            .map(({ seq, body }) => ({ seq, body }));
    return historyRead(latestSeq, this.epoch, afterSeq, events);
  }

  async subscribeUser(userId: string): Promise<void> {
    this.open();
    this.userRefs.set(userId, (this.userRefs.get(userId) ?? 0) + 1);
  }

  async unsubscribeUser(userId: string): Promise<void> {
    const refs = (this.userRefs.get(userId) ?? 0) - 1;
    if (refs > 0) this.userRefs.set(userId, refs);
    else this.userRefs.delete(userId);
  }

  async publishUserControl(userId: string, payload: string): Promise<number> {
    this.open();
    if (!this.userSubscribed(userId)) return 0;
    this.deliver({ kind: "user_control", userId, payload }, () => this.userSubscribed(userId));
    return 1;
  }

  async subscribeInstance(instanceId: string): Promise<void> {
    this.open();
    this.instances.add(instanceId);
  }

  async publishInstance(instanceId: string, payload: string): Promise<void> {
    this.open();
    this.deliver({ kind: "instance_control", payload }, () => this.instances.has(instanceId));
  }

  onMessage(handler: (message: BusMessage) => void): void {
    this.handlers.push(handler);
  }

  // The in-process bus never drops.
  onBusStatus(): void {}

  async check() {
    return { store: !this.closed, bus: !this.closed };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
  }

  private live(expiresAt: number | undefined): expiresAt is number {
    return expiresAt !== undefined && expiresAt > this.now();
  }

  private open(): void {
    if (this.closed) throw new StoreUnavailableError(new Error("store closed"));
  }

  /** Takes the ticket once, as gwAdmit does: its record, or why there is none (a live "used" marker, or nothing). */
  private takeTicket(key: string): TicketRecord | "used" | "unknown" {
    const entry = this.tickets.get(key);
    this.tickets.delete(key);
    if (entry !== undefined && this.live(entry.expiresAt)) {
      this.usedTickets.set(key, this.now() + TICKET_USED_MARKER_MS);
      return JSON.parse(entry.json) as TicketRecord;
    }
    return this.live(this.usedTickets.get(key)) ? "used" : "unknown";
  }

  /** A later, live marker is kept: an older revocation never undoes a newer one. */
  private markLater(markers: Map<string, Marker>, userId: string, atMs: number, keepMs: number): void {
    const current = markers.get(userId);
    const at = current !== undefined && this.live(current.expiresAt) ? Math.max(current.at, atMs) : atMs;
    markers.set(userId, { at: Math.floor(at), expiresAt: this.now() + keepMs });
  }

  /** One hit in the fixed window of `key`, opened now if there is none. */
  private count(windows: Map<string, { count: number; resetAt: number }>, key: string, windowMs: number, by = 1) {
    let window = windows.get(key);
    if (window === undefined || !this.live(window.resetAt)) windows.set(key, (window = { count: 0, resetAt: this.now() + windowMs }));
    window.count += by;
    return { count: window.count, resetInMs: window.resetAt - this.now() };
  }

  private markerAt(markers: Map<string, Marker>, userId: string): number {
    const entry = markers.get(userId);
    return entry !== undefined && this.live(entry.expiresAt) ? entry.at : 0;
  }

  private liveConnections(userId: string): Map<string, number> {
    let conns = this.connections.get(userId);
    if (conns === undefined) this.connections.set(userId, (conns = new Map()));
    for (const [id, expiresAt] of conns) if (!this.live(expiresAt)) conns.delete(id);
    return conns;
  }

  private heldEvents(stream: Stream, ttlMs: number) {
    return stream.events.filter((e) => e.at >= this.now() - ttlMs);
  }

  private deliver(message: BusMessage, wanted: () => boolean): void {
    setImmediate(() => {
      if (this.closed || !wanted()) return;
      for (const handler of this.handlers) {
        try {
          handler(message);
        } catch (err) {
          this.options.logger?.warn({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, "bus handler threw");
        }
      }
    });
  }

  private userSubscribed(userId: string): boolean {
    return (this.userRefs.get(userId) ?? 0) > 0;
  }

  /** Gives the events the next seqs, appends them to the user's history (trimmed to the limits) and delivers them in order. */
  private append(userId: string, events: readonly AgentEventInput[], limits: HistoryLimits) {
    let stream = this.streams.get(userId);
    if (stream === undefined) this.streams.set(userId, (stream = { n: 0, ttlMs: limits.ttlMs, events: [] }));
    const firstSeq = stream.n + 1;
    stream.ttlMs = limits.ttlMs;
    for (const event of events) {
      const seq = ++stream.n;
      const body = JSON.stringify(event);
      stream.events.push({ seq, body, at: this.now() });
      this.deliver({ kind: "event", userId, epoch: this.epoch, event: { seq, body } }, () => this.userSubscribed(userId));
    }
    stream.events = this.heldEvents(stream, limits.ttlMs).slice(-limits.maxEvents);
    return { firstSeq, epoch: this.epoch };
  }

  private sweep(): void {
    const expired = <V>(map: Map<string, V>, expiresAt: (v: V) => number) => {
      for (const [key, value] of map) if (!this.live(expiresAt(value))) map.delete(key);
    };
    expired(this.tickets, (t) => t.expiresAt);
    expired(this.usedTickets, (t) => t);
    expired(this.windows, (w) => w.resetAt);
    expired(this.ticketWindows, (w) => w.resetAt);
    expired(this.revocations, (r) => r.expiresAt);
    for (const [userId, ids] of this.accepted) {
      for (const [id, at] of ids) if (!this.live(at + this.acceptedTtlMs)) ids.delete(id);
      if (ids.size === 0) this.accepted.delete(userId);
    }
    expired(this.tokenRevocations, (r) => r.expiresAt);
    for (const [userId, conns] of this.connections) {
      expired(conns, (c) => c);
      if (conns.size === 0) this.connections.delete(userId);
    }
    for (const stream of this.streams.values()) stream.events = this.heldEvents(stream, stream.ttlMs);
    expired(this.claims, (at) => at + this.claimStaleMs);
  }
}

/** Admission tickets share the ticket maps, under a key no plain ticket hash (base64url) can take. */
const admissionKey = (key: TicketKey) => `${key.slot}:${key.hash}`;

const claimKey = (userId: string, messageId: string) => JSON.stringify([userId, messageId]);
