/**
 * What the memory store and the Redis store must agree on, in one place: the
 * contract suite (test/integration/store-contract.test.ts) runs against both.
 */
import { randomBytes } from "node:crypto";
import type { HistoryRead, StoredEvent } from "./types.js";

/** How long after its ttl a ticket still says "expired" rather than "unknown". */
export const TICKET_GRACE_MS = 60_000;
/** How long a redeemed ticket still says "used" (longer than any ticket's ttl plus grace). */
export const TICKET_USED_MARKER_MS = 10 * 60_000;

/** A fresh epoch: sortable by time, unguessable, and without spaces (the bus frame relies on it). */
export function newEpoch(): string {
  return `${Date.now().toString(36)}-${randomBytes(6).toString("hex")}`;
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
