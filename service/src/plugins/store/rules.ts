/**
 * What the memory store and the Redis store must agree on, in one place: the
 * contract suite (test/integration/store-contract.test.ts) runs against both.
 */
import { randomUUID } from "node:crypto";
import type { AdmitRefusal, HistoryRead, Store, StoredEvent, TicketRecord } from "./types.js";

/** How long after its ttl a ticket still says "expired" rather than "unknown". */
export const TICKET_GRACE_MS = 60_000;
/** How long a redeemed ticket still says "used" (longer than any ticket's ttl plus grace). */
export const TICKET_USED_MARKER_MS = 10 * 60_000;

/**
 * A fresh epoch: sortable by time, unguessable, and without spaces (the bus
 * frame relies on it). Every publish sends one (used only if the counter is
 * new), so its 48 random bits come from randomUUID, which draws from a
 * pooled buffer, instead of one randomBytes call per publish (~3% of a
 * publish in the profile). Characters 0-7 and 9-12 of a v4 UUID are random.
 */
export function newEpoch(): string {
  const uuid = randomUUID();
  return `${Date.now().toString(36)}-${uuid.slice(0, 8)}${uuid.slice(9, 13)}`;
}

/**
 * Whether a tokens-not-before marker (epoch ms, 0 for none) refuses a token
 * issued at `issuedAt`: issued before it, or with no `iat` while one is in
 * force (fail closed). The gwIssueTicket script applies the same rule.
 */
export function refusedByNotBefore(notBeforeMs: number, issuedAt: number | undefined): boolean {
  return notBeforeMs > 0 && (issuedAt === undefined || issuedAt < notBeforeMs);
}

/**
 * A history read is complete when it holds every event after `afterSeq`, in
 * seq order without a gap; otherwise the client must resync (more were
 * missed than are kept, or some expired).
 */
export function historyRead(latestSeq: number, epoch: string, afterSeq: number, events: StoredEvent[]): HistoryRead {
  const complete =
    afterSeq <= latestSeq &&
    events.length === latestSeq - afterSeq &&
    events.every((event, i) => event.seq === afterSeq + 1 + i);
  return { latestSeq, epoch, events, complete };
}

/**
 * What admission checks on a ticket it took, in this order (gwAdmit in
 * scripts.ts is the same rule in Lua): its own expiry, the Origin it is bound
 * to, a revocation at or after its issue (a marker that is not a number counts
 * as one: `revokedAt` reads it as forever), the session's end. Undefined: admissible.
 */
export function admissionRefusal(record: TicketRecord, at: { nowMs: number; origin: string | null; revokedAt: number }): AdmitRefusal | undefined {
  if (record.expiresAt <= at.nowMs) return "TICKET_EXPIRED";
  if (record.origin !== null && record.origin !== at.origin) return "ORIGIN_FORBIDDEN";
  if (at.revokedAt >= record.issuedAt) return "SESSION_REVOKED";
  if (record.sessionExpiresAt <= at.nowMs) return "SESSION_EXPIRED";
  return undefined;
}

/** Every member of Store; the compiler holds it to the interface, both ways. */
const STORE_MEMBERS = {
  kind: true,
  issueTicket: true,
  admit: true,
  addHits: true,
  userState: true,
  hit: true,
  revokeUser: true,
  revokedAt: true,
  revokeTokensBefore: true,
  tokensNotBefore: true,
  addConnection: true,
  removeConnection: true,
  refreshConnections: true,
  claimMessage: true,
  markMessageStarted: true,
  releaseMessage: true,
  publishEvent: true,
  publishEvents: true,
  head: true,
  readHistory: true,
  subscribeUser: true,
  unsubscribeUser: true,
  publishUserControl: true,
  subscribeInstance: true,
  publishInstance: true,
  onMessage: true,
  onBusStatus: true,
  check: true,
  close: true,
} as const satisfies Record<keyof Store, true>;

/**
 * A store as a plain object of bound methods, as both stores have always
 * been handed out: a caller may spread it and replace one method (tests
 * inject faults that way), which a class instance's prototype methods would
 * not survive.
 */
export function asPlainStore(store: Store): Store {
  const plain: Record<string, unknown> = {};
  for (const name of Object.keys(STORE_MEMBERS) as (keyof Store)[]) {
    const member: unknown = store[name];
    plain[name] = typeof member === "function" ? (member as (...args: unknown[]) => unknown).bind(store) : member;
  }
  return plain as unknown as Store;
}
