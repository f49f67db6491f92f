import { randomUUID } from "node:crypto";
import type { Metrics } from "../plugins/metrics.js";
import type { Store } from "../plugins/store/types.js";

/** `at`: the revocation time (absent from instances before it was sent: read as "any ticket"). */
export type Control = { op: "revoke"; req: string; reply_to: string; at?: number } | { op: "revoke_reply"; req: string; closed: number };

const REVOKE_WAIT_MS = 1000;

/**
 * A revoke's request/reply over the bus: the request goes out on the user's
 * control channel; every instance that hears it closes the user's sockets and
 * answers on the requester's instance channel with how many it closed.
 */
export class RevokeRoundTrip {
  private readonly replies = new Map<string, (closed: number) => void>();
  private instanceChannel: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly metrics: Metrics,
    private readonly instanceId: string,
  ) {}

  // The reply channel of revokes. Retried on the next revoke if the store was
  // down when the hub started (and never left as an unhandled rejection).
  subscribeInstance(): Promise<void> {
    return (this.instanceChannel ??= this.store.subscribeInstance(this.instanceId).catch((err: unknown) => {
      this.instanceChannel = undefined;
      throw err;
    }));
  }

  /**
   * Marks the user revoked, asks every instance to close the user's sockets,
   * and resolves to the number closed on the instances that answered within 1 s.
   */
  async request(userId: string, revokedAt: number, keepMs: number): Promise<number> {
    await this.subscribeInstance();
    await this.store.revokeUser(userId, revokedAt, keepMs);
    const req = randomUUID();
    let closed = 0;
    let answered = 0;
    let expected = Infinity;
    let finish: () => void = () => undefined;
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    this.replies.set(req, (n) => {
      closed += n;
      if (++answered >= expected) finish();
    });
    const timer = setTimeout(finish, REVOKE_WAIT_MS);
    try {
      const request: Control = { op: "revoke", req, reply_to: this.instanceId, at: revokedAt };
      expected = await this.store.publishUserControl(userId, JSON.stringify(request));
      if (answered >= expected) finish();
      await done;
    } finally {
      clearTimeout(timer);
      this.replies.delete(req);
    }
    return closed;
  }

  /** Tells the requester of a revoke how many of the user's sockets this instance closed. */
  reply(request: Extract<Control, { op: "revoke" }>, closed: number): void {
    this.store
      .publishInstance(request.reply_to, JSON.stringify({ op: "revoke_reply", req: request.req, closed }))
      .catch(() => this.metrics.storeUnavailable.inc({ operation: "revoke_reply" }));
  }

  /** Counts an instance's answer to one of this instance's revokes. */
  heardReply(reply: Extract<Control, { op: "revoke_reply" }>): void {
    this.replies.get(reply.req)?.(reply.closed);
  }
}
