import { randomUUID } from "node:crypto";
import type { FastifyBaseLogger } from "fastify";
import type { Config } from "../config.js";
import type { Metrics } from "../plugins/metrics.js";
import { eventTimestamp } from "../plugins/store/codec.js";
import { StoreUnavailableError, type Store, type StreamHead } from "../plugins/store/types.js";
import type { ConnectionSlot } from "../auth/tickets.js";
import type { Connection } from "./connection.js";
import { TimerWheel } from "./timerWheel.js";
import { createUserChannels } from "./userChannels.js";

/**
 * This instance's sockets, and the bus that joins them to every other
 * instance. Fan-out is per user: an instance subscribes to a user's channel
 * while it holds at least one of the user's sockets (docs/fanout.md says why,
 * and what it costs at 50,000 users over 20 instances).
 *
 * The hub owns registration: a connection is counted among its user's
 * connections by the admission step (store.admit, with the hub's
 * `connectionSlot`), registered here, and uncounted here when it ends
 * (`unregister`, or `release` when it ended before it was registered).
 *
 * The hub owns the process's one timer wheel (timerWheel.ts): the periodic
 * work (heartbeats, refreshing the per-user connection count) and every
 * connection's deadlines run on it, not on a timer per socket.
 */
export type Hub = ReturnType<typeof createHub>;

/** `at`: the revocation time (absent from instances before it was sent: read as "any ticket"). */
type Control = { op: "revoke"; req: string; reply_to: string; at?: number } | { op: "revoke_reply"; req: string; closed: number };

/** Entries of the cross-instance connection count live this long unless refreshed. */
const CONNECTION_TTL_MS = 90_000;
const CONNECTION_REFRESH_MS = 30_000;
const REVOKE_WAIT_MS = 1000;
/** The timer wheel's tick: session and hold deadlines fire within this much of their time. */
const WHEEL_TICK_MS = 250;

/** What admission hands the hub with a new connection. */
export interface Admitted {
  readonly issuedAt: number;
  readonly head: StreamHead;
  /** hub.generation, noted before the admission step was sent. */
  readonly admittedAfter: number;
}

export function createHub(deps: { store: Store; metrics: Metrics; log: FastifyBaseLogger; config: Config; instanceId?: string }) {
  const { store, metrics, log } = deps;
  const instanceId = deps.instanceId ?? randomUUID();
  const connections = new Set<Connection>();
  const channels = createUserChannels({ store });
  const revokeReplies = new Map<string, (closed: number) => void>();
  let draining = false;
  let busUp = true;

  // Fine enough for the heartbeat (tests run it at 100 ms), coarse enough to cost nothing.
  const timers = new TimerWheel(Math.min(WHEEL_TICK_MS, deps.config.heartbeatIntervalMs));
  timers.every(deps.config.heartbeatIntervalMs, () => {
    for (const conn of connections) conn.heartbeat();
  });
  timers.every(CONNECTION_REFRESH_MS, () => {
    const entries = [...connections].map((c) => ({ userId: c.userId, connectionId: c.id }));
    if (entries.length === 0) return;
    store.refreshConnections(entries, CONNECTION_TTL_MS).catch(() => metrics.storeUnavailable.inc({ operation: "refresh_connections" }));
  });

  store.onMessage((message) => {
    if (message.kind === "event") {
      const ts = Date.parse(eventTimestamp(message.event.body));
      if (!Number.isNaN(ts)) metrics.busLagSeconds.observe(Math.max(0, Date.now() - ts) / 1000);
      channels.heardEvent(message.userId, message.epoch, message.event.seq);
      const conns = channels.connsOf(message.userId);
      if (conns) for (const conn of conns) conn.deliverLive(message.epoch, message.event);
      return;
    }
    let control: Control;
    try {
      control = JSON.parse(message.payload) as Control;
    } catch {
      return;
    }
    if (message.kind === "user_control" && control.op === "revoke") {
      channels.heardRevoke(message.userId, typeof control.at === "number" ? control.at : undefined);
      const conns = [...(channels.connsOf(message.userId) ?? [])];
      for (const conn of conns) conn.close("SESSION_REVOKED");
      store
        .publishInstance(control.reply_to, JSON.stringify({ op: "revoke_reply", req: control.req, closed: conns.length }))
        .catch(() => metrics.storeUnavailable.inc({ operation: "revoke_reply" }));
    } else if (message.kind === "instance_control" && control.op === "revoke_reply") {
      revokeReplies.get(control.req)?.(control.closed);
    }
  });

  store.onBusStatus((up) => {
    const wasDown = !busUp;
    busUp = up;
    log[up ? "info" : "error"]({ event: up ? "bus_up" : "bus_down" }, up ? "bus reconnected" : "bus connection lost");
    // Whatever was published while the bus was down never reached this
    // instance: every connection reads it from history now.
    if (up && wasDown) {
      channels.resubscribed();
      for (const conn of connections) conn.catchUp();
    }
  });

  // The reply channel of revokes. Retried on the next revoke if the store was
  // down when the hub started (and never left as an unhandled rejection).
  let instanceChannel: Promise<void> | undefined;
  const subscribeInstance = () =>
    (instanceChannel ??= store.subscribeInstance(instanceId).catch((err: unknown) => {
      instanceChannel = undefined;
      throw err;
    }));
  subscribeInstance().catch(() => undefined);

  function release(userId: string, connectionId: string): void {
    store.removeConnection(userId, connectionId).catch(() => metrics.storeUnavailable.inc({ operation: "remove_connection" }));
  }

  /**
   * Why nothing published after the head read is missed, and why a revoke
   * that raced the connect still ends it. The admission step read the head H
   * (and the revocation) atomically with taking the ticket, maybe before this
   * instance heard the user's channel. When the subscription was in place
   * before that step, what the bus said since answers (userChannels.ts).
   * Otherwise, once the subscription is in place (the node acknowledged it)
   * and the connection is registered here, read the head and the revocation
   * again. An event with seq > H, or a revoke's control message, either
   * reaches this instance after that point (delivered to the connection) or
   * was published before the second read was executed, on the same node (a
   * user's keys and channel share a slot), so the read sees it: a higher head
   * means catch up from history (the connection sends only seqs it has not
   * sent, so nothing twice), a revocation at or after the ticket's issue
   * closes with SESSION_REVOKED (a revoke writes its marker before it
   * publishes). While the bus is down nothing it said is trusted: the store
   * is asked.
   */
  async function confirm(conn: Connection, subscribed: Promise<void>, admitted: Admitted): Promise<void> {
    const heard = busUp ? channels.missed(conn.userId, admitted.admittedAfter, admitted.head, admitted.issuedAt) : { known: false as const };
    if (heard.known) {
      if (heard.revoked) conn.close("SESSION_REVOKED");
      else if (heard.behind) conn.catchUp();
      return;
    }
    try {
      await subscribed;
      const { head, revokedAt } = await store.userState(conn.userId);
      if (!conn.open) return;
      if (revokedAt >= admitted.issuedAt) return conn.close("SESSION_REVOKED");
      if (head.epoch !== admitted.head.epoch || head.latestSeq > admitted.head.latestSeq) conn.catchUp();
    } catch (err) {
      if (!conn.open) return;
      if (err instanceof StoreUnavailableError) {
        metrics.storeUnavailable.inc({ operation: "confirm_connection" });
        return conn.close("TICKET_STORE_UNAVAILABLE");
      }
      log.error({ err, event: "ws_internal_error", connection_id: conn.id }, "unexpected error while confirming a connection");
      conn.close("INTERNAL_ERROR");
    }
  }

  return {
    get draining() {
      return draining;
    },
    get size() {
      return connections.size;
    },
    /** What admission registers a new connection as, among its user's (store.admit). */
    connectionSlot(connectionId: string): ConnectionSlot {
      return { id: connectionId, max: deps.config.maxConnectionsPerUser, ttlMs: CONNECTION_TTL_MS };
    },

    /** Note before the admission step: what `register` takes as `admittedAfter`. */
    get generation(): number {
      return channels.generation;
    },

    /**
     * Adds a started connection that admission counted, from `head` (read by
     * the admission step, before this instance necessarily heard the user's
     * channel). The channel is subscribed once per user per instance; then
     * `confirm` closes what that ordering could have missed.
     */
    register(conn: Connection, admitted: Admitted): void {
      connections.add(conn);
      metrics.wsConnections.inc();
      void confirm(conn, channels.join(conn), admitted);
    },

    unregister(conn: Connection): void {
      if (!connections.delete(conn)) return;
      metrics.wsConnections.dec();
      channels.leave(conn);
      release(conn.userId, conn.id);
    },

    /** Uncounts a connection that admission counted and that ended before it was registered. */
    release,

    connectionTtlMs: CONNECTION_TTL_MS,

    /** The wheel connections schedule their deadlines on (ConnectionDeps.timers). */
    timers,

    /**
     * Closes every socket of the user on every instance with 4501 and voids the
     * user's unredeemed tickets. Resolves to the number of sockets closed on
     * the instances that answered within 1 s.
     */
    async revoke(userId: string, revokedAt: number, keepMs: number): Promise<number> {
      await subscribeInstance();
      await store.revokeUser(userId, revokedAt, keepMs);
      const req = randomUUID();
      let closed = 0;
      let answered = 0;
      let expected = Infinity;
      let finish: () => void = () => undefined;
      const done = new Promise<void>((resolve) => {
        finish = resolve;
      });
      revokeReplies.set(req, (n) => {
        closed += n;
        if (++answered >= expected) finish();
      });
      const timer = setTimeout(finish, REVOKE_WAIT_MS);
      try {
        expected = await store.publishUserControl(userId, JSON.stringify({ op: "revoke", req, reply_to: instanceId, at: revokedAt }));
        if (answered >= expected) finish();
        await done;
      } finally {
        clearTimeout(timer);
        revokeReplies.delete(req);
      }
      return closed;
    },

    /**
     * Closes every socket with 4012 SERVICE_RESTART and waits (bounded) for the
     * closing handshakes, so clients see 4012 and reconnect elsewhere, never 1006.
     */
    async drain(timeoutMs: number): Promise<void> {
      draining = true;
      const all = [...connections];
      const closed = Promise.all(all.map((c) => new Promise<void>((resolve) => c.onceClosed(resolve))));
      for (const conn of all) conn.close("SERVICE_RESTART");
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    },

    close(): void {
      timers.close();
      channels.close();
    },
  };
}
