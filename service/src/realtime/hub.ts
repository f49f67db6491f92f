import { randomUUID } from "node:crypto";
import type { FastifyBaseLogger } from "fastify";
import type { Config } from "../config.js";
import type { Metrics } from "../plugins/metrics.js";
import { eventTimestamp } from "../plugins/store/codec.js";
import type { Store } from "../plugins/store/types.js";
import type { Connection } from "./connection.js";
import { TimerWheel } from "./timerWheel.js";

/**
 * This instance's sockets, and the bus that joins them to every other
 * instance. Fan-out is per user: an instance subscribes to a user's channel
 * while it holds at least one of the user's sockets (docs/fanout.md says why,
 * and what it costs at 50,000 users over 20 instances).
 *
 * The hub owns the process's one timer wheel (timerWheel.ts): the periodic
 * work (heartbeats, refreshing the per-user connection count) and every
 * connection's deadlines run on it, not on a timer per socket.
 */
export type Hub = ReturnType<typeof createHub>;

type Control = { op: "revoke"; req: string; reply_to: string } | { op: "revoke_reply"; req: string; closed: number };

/** Entries of the cross-instance connection count live this long unless refreshed. */
const CONNECTION_TTL_MS = 90_000;
const CONNECTION_REFRESH_MS = 30_000;
const REVOKE_WAIT_MS = 1000;
/** The timer wheel's tick: session and hold deadlines fire within this much of their time. */
const WHEEL_TICK_MS = 250;

export function createHub(deps: { store: Store; metrics: Metrics; log: FastifyBaseLogger; config: Config; instanceId?: string }) {
  const { store, metrics, log } = deps;
  const instanceId = deps.instanceId ?? randomUUID();
  const connections = new Set<Connection>();
  const byUser = new Map<string, Set<Connection>>();
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
      const conns = byUser.get(message.userId);
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
      const conns = [...(byUser.get(message.userId) ?? [])];
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
    if (up && wasDown) for (const conn of connections) conn.catchUp();
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

  return {
    get draining() {
      return draining;
    },
    get size() {
      return connections.size;
    },
    /** Adds the connection and resolves once its user's channel is subscribed. */
    async register(conn: Connection): Promise<void> {
      connections.add(conn);
      let set = byUser.get(conn.userId);
      if (!set) byUser.set(conn.userId, (set = new Set()));
      set.add(conn);
      metrics.wsConnections.inc();
      await store.subscribeUser(conn.userId);
    },

    unregister(conn: Connection): void {
      if (!connections.delete(conn)) return;
      metrics.wsConnections.dec();
      const set = byUser.get(conn.userId);
      set?.delete(conn);
      if (set?.size === 0) byUser.delete(conn.userId);
      store.unsubscribeUser(conn.userId).catch(() => undefined);
      store.removeConnection(conn.userId, conn.id).catch(() => metrics.storeUnavailable.inc({ operation: "remove_connection" }));
    },

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
        expected = await store.publishUserControl(userId, JSON.stringify({ op: "revoke", req, reply_to: instanceId }));
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
    },
  };
}
