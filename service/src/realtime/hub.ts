import { randomUUID } from "node:crypto";
import type { FastifyBaseLogger } from "fastify";
import type { Config } from "../config.js";
import type { Metrics } from "../plugins/metrics.js";
import { eventTimestamp } from "../plugins/store/codec.js";
import { StoreUnavailableError, type BusMessage, type Store, type StreamHead } from "../plugins/store/types.js";
import type { ConnectionSlot } from "../auth/tickets.js";
import type { Connection } from "./connection.js";
import { TimerWheel } from "./timerWheel.js";
import { createUserChannels, type UserChannels } from "./userChannels.js";
import { RevokeRoundTrip, type Control } from "./revokeRoundTrip.js";

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

/** Entries of the cross-instance connection count live this long unless refreshed. */
const CONNECTION_TTL_MS = 90_000;
const CONNECTION_REFRESH_MS = 30_000;
/** The timer wheel's tick: session and hold deadlines fire within this much of their time. */
const WHEEL_TICK_MS = 250;

/** What admission hands the hub with a new connection. */
export interface Admitted {
  readonly issuedAt: number;
  readonly head: StreamHead;
  /** hub.generation, noted before the admission step was sent. */
  readonly admittedAfter: number;
}

interface HubDeps {
  store: Store;
  metrics: Metrics;
  log: FastifyBaseLogger;
  config: Config;
  instanceId?: string;
}

export function createHub(deps: HubDeps) {
  return new ConnectionHub(deps);
}

class ConnectionHub {
  private readonly store: Store;
  private readonly metrics: Metrics;
  private readonly log: FastifyBaseLogger;
  private readonly config: Config;
  private readonly connections = new Set<Connection>();
  private readonly channels: UserChannels;
  private readonly revokes: RevokeRoundTrip;
  private isDraining = false;
  private busUp = true;

  readonly connectionTtlMs = CONNECTION_TTL_MS;

  /** The wheel connections schedule their deadlines on (ConnectionDeps.timers). */
  readonly timers: TimerWheel;

  constructor(deps: HubDeps) {
    ({ store: this.store, metrics: this.metrics, log: this.log, config: this.config } = deps);
    this.channels = createUserChannels({ store: this.store });
    this.revokes = new RevokeRoundTrip(this.store, this.metrics, deps.instanceId ?? randomUUID());
    this.timers = this.startPeriodicWork();
    this.store.onMessage((message) => this.dispatchBusMessage(message));
    this.store.onBusStatus((up) => this.followBusStatus(up));
    this.revokes.subscribeInstance().catch(() => undefined);
  }

  get draining(): boolean {
    return this.isDraining;
  }

  get size(): number {
    return this.connections.size;
  }

  /** What admission registers a new connection as, among its user's (store.admit). */
  connectionSlot(connectionId: string): ConnectionSlot {
    return { id: connectionId, max: this.config.maxConnectionsPerUser, ttlMs: CONNECTION_TTL_MS };
  }

  /** Note before the admission step: what `register` takes as `admittedAfter`. */
  get generation(): number {
    return this.channels.generation;
  }

  /**
   * Adds a started connection that admission counted, from `head` (read by
   * the admission step, before this instance necessarily heard the user's
   * channel). The channel is subscribed once per user per instance; then
   * `confirm` closes what that ordering could have missed.
   */
  register(conn: Connection, admitted: Admitted): void {
    this.connections.add(conn);
    this.metrics.wsConnections.inc();
    void this.confirm(conn, this.channels.join(conn), admitted);
  }

  unregister(conn: Connection): void {
    if (!this.connections.delete(conn)) return;
    this.metrics.wsConnections.dec();
    this.channels.leave(conn);
    this.release(conn.userId, conn.id);
  }

  /** Uncounts a connection that admission counted and that ended before it was registered. */
  readonly release = (userId: string, connectionId: string): void => {
    this.store.removeConnection(userId, connectionId).catch(() => this.metrics.storeUnavailable.inc({ operation: "remove_connection" }));
  };

  /**
   * Closes every socket of the user on every instance with 4501 and voids the
   * user's unredeemed tickets. Resolves to the number of sockets closed on
   * the instances that answered within 1 s.
   */
  revoke(userId: string, revokedAt: number, keepMs: number): Promise<number> {
    return this.revokes.request(userId, revokedAt, keepMs);
  }

  /**
   * Closes every socket with 4012 SERVICE_RESTART and waits (bounded) for the
   * closing handshakes, so clients see 4012 and reconnect elsewhere, never 1006.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.isDraining = true;
    const all = [...this.connections];
    const closed = Promise.all(all.map((c) => new Promise<void>((resolve) => c.onceClosed(resolve))));
    for (const conn of all) conn.close("SERVICE_RESTART");
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  close(): void {
    this.timers.close();
    this.channels.close();
  }

  /** Heartbeats, and refreshing this instance's entries of the per-user connection count. */
  private startPeriodicWork(): TimerWheel {
    const { heartbeatIntervalMs } = this.config;
    // Fine enough for the heartbeat (tests run it at 100 ms), coarse enough to cost nothing.
    const timers = new TimerWheel(Math.min(WHEEL_TICK_MS, heartbeatIntervalMs));
    timers.every(heartbeatIntervalMs, () => {
      for (const conn of this.connections) conn.heartbeat();
    });
    timers.every(CONNECTION_REFRESH_MS, () => {
      const entries = [...this.connections].map((c) => ({ userId: c.userId, connectionId: c.id }));
      if (entries.length === 0) return;
      this.store.refreshConnections(entries, CONNECTION_TTL_MS).catch(() => this.metrics.storeUnavailable.inc({ operation: "refresh_connections" }));
    });
    return timers;
  }

  private dispatchBusMessage(message: BusMessage): void {
    if (message.kind === "event") return this.deliverEvent(message);
    let control: Control;
    try {
      control = JSON.parse(message.payload) as Control;
    } catch {
      return;
    }
    if (message.kind === "user_control" && control.op === "revoke") {
      this.channels.heardRevoke(message.userId, typeof control.at === "number" ? control.at : undefined);
      const conns = [...(this.channels.connsOf(message.userId) ?? [])];
      for (const conn of conns) conn.close("SESSION_REVOKED");
      this.revokes.reply(control, conns.length);
    } else if (message.kind === "instance_control" && control.op === "revoke_reply") {
      this.revokes.heardReply(control);
    }
  }

  private deliverEvent(message: Extract<BusMessage, { kind: "event" }>): void {
    const ts = Date.parse(eventTimestamp(message.event.body));
    if (!Number.isNaN(ts)) this.metrics.busLagSeconds.observe(Math.max(0, Date.now() - ts) / 1000);
    this.channels.heardEvent(message.userId, message.epoch, message.event.seq);
    const conns = this.channels.connsOf(message.userId);
    if (conns) for (const conn of conns) conn.deliverLive(message.epoch, message.event);
  }

  private followBusStatus(up: boolean): void {
    const wasDown = !this.busUp;
    this.busUp = up;
    this.log[up ? "info" : "error"]({ event: up ? "bus_up" : "bus_down" }, up ? "bus reconnected" : "bus connection lost");
    // Whatever was published while the bus was down never reached this
    // instance: every connection reads it from history now.
    if (up && wasDown) {
      this.channels.resubscribed();
      for (const conn of this.connections) conn.catchUp();
    }
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
  private async confirm(conn: Connection, subscribed: Promise<void>, admitted: Admitted): Promise<void> {
    const heard = this.busUp
      ? this.channels.missed(conn.userId, admitted.admittedAfter, admitted.head, admitted.issuedAt)
      : { known: false as const };
    if (heard.known) {
      if (heard.revoked) conn.close("SESSION_REVOKED");
      else if (heard.behind) conn.catchUp();
      return;
    }
    try {
      await subscribed;
      const { head, revokedAt } = await this.store.userState(conn.userId);
      if (!conn.open) return;
      if (revokedAt >= admitted.issuedAt) return conn.close("SESSION_REVOKED");
      if (head.epoch !== admitted.head.epoch || head.latestSeq > admitted.head.latestSeq) conn.catchUp();
    } catch (err) {
      if (!conn.open) return;
      if (err instanceof StoreUnavailableError) {
        this.metrics.storeUnavailable.inc({ operation: "confirm_connection" });
        return conn.close("TICKET_STORE_UNAVAILABLE");
      }
      this.log.error({ err, event: "ws_internal_error", connection_id: conn.id }, "unexpected error while confirming a connection");
      conn.close("INTERNAL_ERROR");
    }
  }
}
