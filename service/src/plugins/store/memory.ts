/**
 * The Store in process memory, for `npm run dev`: one instance, no Redis.
 * Same contract as the Redis store (one suite tests both): expiries are
 * judged lazily against `now()`, so tests move an injected clock instead of
 * sleeping, and an unref'd sweep keeps memory bounded. The bus delivers on a
 * later turn of the event loop, in publish order, as Redis would.
 */
import { historyRead, newEpoch, TICKET_GRACE_MS, TICKET_USED_MARKER_MS } from "./rules.js";
import {
  StoreUnavailableError,
  type AgentEventInput,
  type BusMessage,
  type ClaimOutcome,
  type HistoryLimits,
  type HistoryRead,
  type RedeemOutcome,
  type Store,
  type StoredEvent,
  type StreamHead,
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

export function createMemoryStore(options: MemoryStoreOptions = {}): Store {
  const now = options.now ?? Date.now;
  // Fixed for the life of the store: a fresh store (a restarted dev server) is a fresh stream.
  const epoch = newEpoch();

  const tickets = new Map<string, { json: string; expiresAt: number }>();
  const usedTickets = new Map<string, number>();
  const windows = new Map<string, { count: number; resetAt: number }>();
  const revocations = new Map<string, { at: number; expiresAt: number }>();
  const tokenRevocations = new Map<string, { at: number; expiresAt: number }>();
  const connections = new Map<string, Map<string, number>>();
  /** Accepted chat message ids per user, oldest first (a Map keeps insertion order): id → when accepted. */
  const accepted = new Map<string, Map<string, number>>();
  /** Hand-offs in progress: claim key → when claimed. */
  const claims = new Map<string, number>();
  // Counters are never dropped: a counter that restarted at 1 within the same epoch would hand out old seqs again.
  const streams = new Map<string, Stream>();
  const userRefs = new Map<string, number>();
  const instances = new Set<string>();
  const handlers: ((message: BusMessage) => void)[] = [];
  let closed = false;

  const live = (expiresAt: number | undefined): expiresAt is number => expiresAt !== undefined && expiresAt > now();
  const open = () => {
    if (closed) throw new StoreUnavailableError(new Error("store closed"));
  };
  const claimKey = (userId: string, messageId: string) => JSON.stringify([userId, messageId]);

  const liveConnections = (userId: string): Map<string, number> => {
    let conns = connections.get(userId);
    if (conns === undefined) connections.set(userId, (conns = new Map()));
    for (const [id, expiresAt] of conns) if (!live(expiresAt)) conns.delete(id);
    return conns;
  };

  const heldEvents = (stream: Stream, ttlMs: number) => stream.events.filter((e) => e.at >= now() - ttlMs);

  const deliver = (message: BusMessage, wanted: () => boolean) => {
    setImmediate(() => {
      if (closed || !wanted()) return;
      for (const handler of handlers) {
        try {
          handler(message);
        } catch (err) {
          options.logger?.warn({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, "bus handler threw");
        }
      }
    });
  };
  const userSubscribed = (userId: string) => (userRefs.get(userId) ?? 0) > 0;

  /** Gives the events the next seqs, appends them to the user's history (trimmed to the limits) and delivers them in order. */
  const append = (userId: string, events: readonly AgentEventInput[], limits: HistoryLimits) => {
    let stream = streams.get(userId);
    if (stream === undefined) streams.set(userId, (stream = { n: 0, ttlMs: limits.ttlMs, events: [] }));
    const firstSeq = stream.n + 1;
    stream.ttlMs = limits.ttlMs;
    for (const event of events) {
      const seq = ++stream.n;
      const body = JSON.stringify(event);
      stream.events.push({ seq, body, at: now() });
      deliver({ kind: "event", userId, epoch, event: { seq, body } }, () => userSubscribed(userId));
    }
    stream.events = heldEvents(stream, limits.ttlMs).slice(-limits.maxEvents);
    return { firstSeq, epoch };
  };

  // The ttl of accepted ids, as last given (the gateway passes one value), for the sweep.
  let acceptedTtlMs = 24 * 3600_000;
  let claimStaleMs = 10_000;
  const sweep = () => {
    const expired = <V>(map: Map<string, V>, expiresAt: (v: V) => number) => {
      for (const [key, value] of map) if (!live(expiresAt(value))) map.delete(key);
    };
    expired(tickets, (t) => t.expiresAt);
    expired(usedTickets, (t) => t);
    expired(windows, (w) => w.resetAt);
    expired(revocations, (r) => r.expiresAt);
    for (const [userId, ids] of accepted) {
      for (const [id, at] of ids) if (!live(at + acceptedTtlMs)) ids.delete(id);
      if (ids.size === 0) accepted.delete(userId);
    }
    expired(tokenRevocations, (r) => r.expiresAt);
    for (const [userId, conns] of connections) {
      expired(conns, (c) => c);
      if (conns.size === 0) connections.delete(userId);
    }
    for (const stream of streams.values()) stream.events = heldEvents(stream, stream.ttlMs);
    expired(claims, (at) => at + claimStaleMs);
  };
  const sweeper = setInterval(sweep, SWEEP_INTERVAL_MS);
  sweeper.unref();

  return {
    kind: "memory",

    async putTicket(hash: string, record: TicketRecord, ttlMs: number): Promise<void> {
      open();
      // Stored as JSON, like Redis: the caller's object is not shared.
      tickets.set(hash, { json: JSON.stringify(record), expiresAt: now() + ttlMs + TICKET_GRACE_MS });
    },

    async redeemTicket(hash: string): Promise<RedeemOutcome> {
      open();
      const entry = tickets.get(hash);
      tickets.delete(hash);
      if (entry !== undefined && live(entry.expiresAt)) {
        usedTickets.set(hash, now() + TICKET_USED_MARKER_MS);
        return { status: "ok", record: JSON.parse(entry.json) as TicketRecord };
      }
      return { status: live(usedTickets.get(hash)) ? "used" : "unknown" };
    },

    async hit(key: string, windowMs: number) {
      open();
      let window = windows.get(key);
      if (window === undefined || !live(window.resetAt)) windows.set(key, (window = { count: 0, resetAt: now() + windowMs }));
      window.count++;
      return { count: window.count, resetInMs: window.resetAt - now() };
    },

    async revokeUser(userId: string, atMs: number, keepMs: number): Promise<void> {
      open();
      const current = revocations.get(userId);
      const at = current !== undefined && live(current.expiresAt) ? Math.max(current.at, atMs) : atMs;
      revocations.set(userId, { at: Math.floor(at), expiresAt: now() + keepMs });
    },

    async revokedAt(userId: string): Promise<number> {
      open();
      const entry = revocations.get(userId);
      return entry !== undefined && live(entry.expiresAt) ? entry.at : 0;
    },

    async revokeTokensBefore(userId: string, notBeforeMs: number, keepMs: number): Promise<void> {
      open();
      const current = tokenRevocations.get(userId);
      const at = current !== undefined && live(current.expiresAt) ? Math.max(current.at, notBeforeMs) : notBeforeMs;
      tokenRevocations.set(userId, { at: Math.floor(at), expiresAt: now() + keepMs });
    },

    async tokensNotBefore(userId: string): Promise<number> {
      open();
      const entry = tokenRevocations.get(userId);
      return entry !== undefined && live(entry.expiresAt) ? entry.at : 0;
    },

    async addConnection(userId: string, connectionId: string, max: number, ttlMs: number): Promise<boolean> {
      open();
      const conns = liveConnections(userId);
      if (!conns.has(connectionId) && conns.size >= max) return false;
      conns.set(connectionId, now() + ttlMs);
      return true;
    },

    async removeConnection(userId: string, connectionId: string): Promise<void> {
      open();
      connections.get(userId)?.delete(connectionId);
    },

    async refreshConnections(entries, ttlMs: number): Promise<void> {
      open();
      for (const { userId, connectionId } of entries) liveConnections(userId).set(connectionId, now() + ttlMs);
    },

    async claimMessage(userId: string, messageId: string, options: { ttlMs: number; staleMs: number }): Promise<ClaimOutcome> {
      open();
      acceptedTtlMs = options.ttlMs;
      claimStaleMs = options.staleMs;
      const at = accepted.get(userId)?.get(messageId);
      if (at !== undefined && live(at + options.ttlMs)) return "started";
      const key = claimKey(userId, messageId);
      const claimedAt = claims.get(key);
      if (claimedAt !== undefined && now() - claimedAt < options.staleMs) return "pending";
      claims.set(key, now());
      return "claimed";
    },

    async markMessageStarted(userId: string, messageId: string, options: { ttlMs: number; maxPerUser: number }): Promise<void> {
      open();
      claims.delete(claimKey(userId, messageId));
      let ids = accepted.get(userId);
      if (ids === undefined) accepted.set(userId, (ids = new Map()));
      ids.delete(messageId); // re-inserted as the newest
      ids.set(messageId, now());
      for (const [id, at] of ids) {
        if (ids.size <= options.maxPerUser && live(at + options.ttlMs)) break;
        ids.delete(id);
      }
    },

    async releaseMessage(userId: string, messageId: string): Promise<void> {
      open();
      claims.delete(claimKey(userId, messageId));
    },

    async publishEvent(userId: string, event: AgentEventInput, limits: HistoryLimits) {
      open();
      const { firstSeq, epoch: e } = append(userId, [event], limits);
      return { seq: firstSeq, epoch: e };
    },

    async publishEvents(userId: string, events: readonly AgentEventInput[], limits: HistoryLimits) {
      open();
      if (events.length === 0) throw new RangeError("publishEvents needs at least one event");
      return append(userId, events, limits);
    },

    async head(userId: string): Promise<StreamHead> {
      open();
      return { latestSeq: streams.get(userId)?.n ?? 0, epoch };
    },

    async readHistory(userId: string, afterSeq: number, limits: HistoryLimits): Promise<HistoryRead> {
      open();
      const stream = streams.get(userId);
      const latestSeq = stream?.n ?? 0;
      const gap = latestSeq - afterSeq;
      const events: StoredEvent[] =
        stream === undefined || gap <= 0 || gap > limits.maxEvents
          ? []
          : heldEvents(stream, limits.ttlMs)
              .filter((e) => e.seq > afterSeq)
              .map(({ seq, body }) => ({ seq, body }));
      return historyRead(latestSeq, epoch, afterSeq, events);
    },

    async subscribeUser(userId: string): Promise<void> {
      open();
      userRefs.set(userId, (userRefs.get(userId) ?? 0) + 1);
    },

    async unsubscribeUser(userId: string): Promise<void> {
      const refs = (userRefs.get(userId) ?? 0) - 1;
      if (refs > 0) userRefs.set(userId, refs);
      else userRefs.delete(userId);
    },

    async publishUserControl(userId: string, payload: string): Promise<number> {
      open();
      if (!userSubscribed(userId)) return 0;
      deliver({ kind: "user_control", userId, payload }, () => userSubscribed(userId));
      return 1;
    },

    async subscribeInstance(instanceId: string): Promise<void> {
      open();
      instances.add(instanceId);
    },

    async publishInstance(instanceId: string, payload: string): Promise<void> {
      open();
      deliver({ kind: "instance_control", payload }, () => instances.has(instanceId));
    },

    onMessage(handler) {
      handlers.push(handler);
    },

    // The in-process bus never drops.
    onBusStatus() {},

    async check() {
      return { store: !closed, bus: !closed };
    },

    async close(): Promise<void> {
      closed = true;
      clearInterval(sweeper);
    },
  };
}
