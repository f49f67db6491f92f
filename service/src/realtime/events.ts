import { randomUUID } from "node:crypto";
import { storeCall } from "../plugins/store/storeCall.js";
import { GatewayError } from "../errors.js";
import type { Metrics } from "../plugins/metrics.js";
import type { AgentEventInput, AgentEventType, HistoryLimits, Store } from "../plugins/store/types.js";

/**
 * The one path by which an agent event enters the system: the internal API
 * (one event, or a batch) calls `publish` or `publishMany`. The store assigns the seq,
 * appends to history and fans out in one atomic step.
 */
export interface PublishRequest {
  readonly type: AgentEventType;
  readonly run_id: string;
  readonly thread_id: string;
  readonly data: Record<string, unknown>;
}

export type EventPublisher = ReturnType<typeof createEventPublisher>;

/**
 * How deep an event's `data` may nest. JSON parses 10,000 levels happily, but
 * serialising and storing them failed with a 500; no agent event needs more
 * than a few levels, so a deeper one is refused (400) before any work.
 */
export const MAX_DATA_DEPTH = 32;

/** Whether `value` nests objects or arrays deeper than `max`; iterative, so a hostile depth cannot overflow the stack here. */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== "object") continue;
    if (depth > max) return true;
    for (const child of Object.values(node)) if (child !== null && typeof child === "object") stack.push([child, depth + 1]);
  }
  return false;
}

export function createEventPublisher(deps: { store: Store; limits: HistoryLimits; metrics: Metrics; now?: () => number }) {
  const now = deps.now ?? Date.now;
  return {
    /** Rejects with 503 TICKET_STORE_UNAVAILABLE when the store is down: the publisher retries, nothing is half-published. */
    async publish(userId: string, request: PublishRequest): Promise<{ seq: number; event_id: string }> {
      if (nestsDeeperThan(request.data, MAX_DATA_DEPTH)) {
        throw new GatewayError("BAD_REQUEST", { message: `data nests deeper than ${MAX_DATA_DEPTH} levels.` });
      }
      const event: AgentEventInput = {
        type: request.type,
        event_id: randomUUID(),
        run_id: request.run_id,
        thread_id: request.thread_id,
        ts: new Date(now()).toISOString(),
        data: request.data,
      };
      const { seq } = await storeCall(() => deps.store.publishEvent(userId, event, deps.limits));
      deps.metrics.eventsPublished.inc();
      return { seq, event_id: event.event_id };
    },

    /**
     * Publishes several events of one user in one store round trip: they get
     * contiguous seqs in the order given, all or none. Rejects like publish.
     */
    async publishMany(userId: string, requests: readonly PublishRequest[]): Promise<Array<{ seq: number; event_id: string }>> {
      const ts = new Date(now()).toISOString();
      const events: AgentEventInput[] = requests.map((r) => ({ type: r.type, event_id: randomUUID(), run_id: r.run_id, thread_id: r.thread_id, ts, data: r.data }));
      const { firstSeq } = await storeCall(() => deps.store.publishEvents(userId, events, deps.limits));
      deps.metrics.eventsPublished.inc(events.length);
      return events.map((e, i) => ({ seq: firstSeq + i, event_id: e.event_id }));
    },
  };
}

// The frame built last, and what it was built from.
let lastSeq = 0;
let lastBody = "";
let lastFrame = "";

/**
 * The wire frame of a stored event: `{"seq":N,…}`, built without re-serialising
 * the body. The hub hands one event to every socket of its user in a row, so
 * the frame built last is kept: every socket after the first gets the very
 * same string (built, and flattened by the first send, once). The body is
 * the bus message's own string, so the comparison is by identity in the
 * common case; a different body of another length is told apart at once.
 */
export function eventFrame(seq: number, body: string): string {
  if (seq !== lastSeq || body !== lastBody) {
    lastSeq = seq;
    lastBody = body;
    lastFrame = `{"seq":${seq},${body.slice(1)}`;
  }
  return lastFrame;
}
