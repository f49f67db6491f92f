import { randomUUID } from "node:crypto";
import type { FastifyBaseLogger } from "fastify";
import type { RawData, WebSocket } from "ws";
import type { TicketService } from "../auth/tickets.js";
import type { TokenVerifier } from "../auth/verifier.js";
import type { Config } from "../config.js";
import { GatewayError } from "../errors.js";
import type { Metrics } from "../plugins/metrics.js";
import type { Store } from "../plugins/store/types.js";
import { createAddressBudget } from "./addressBudget.js";
import type { ClosedBy } from "./closeCodes.js";
import { Connection, type ConnectionDeps } from "./connection.js";
import type { Hub } from "./hub.js";
import { createReplayBudgets } from "./replayBudget.js";

/**
 * Admission (docs/protocol.md §3): one step from an upgraded socket and its
 * ticket to a registered Connection, or a GatewayError naming the refusal.
 *
 * On the happy path it costs one store round trip: the address is counted in
 * memory (addressBudget.ts), and store.admit takes the ticket, checks it,
 * counts the connection under the per-user limit and reads the stream head in
 * one script. The hub then subscribes the user's channel (once per instance)
 * and confirms what that ordering could miss (hub.ts), after
 * `connection_established` has gone out.
 */
export type Admission = ReturnType<typeof createAdmission>;

export interface AdmissionAttempt {
  readonly socket: WebSocket;
  /** The `ticket` query parameter, as parsed (an array when repeated). */
  readonly ticket: string | string[] | undefined;
  readonly origin: string | null;
  /** The client address, as Fastify computes it from trustProxy. */
  readonly ip: string;
  readonly log: FastifyBaseLogger;
  /** True once the attempt was refused meanwhile (e.g. too many early frames): its admission is undone. */
  readonly abandoned: () => boolean;
  /** Frames the client sent before admission ended, for the connection to handle first. */
  readonly takeEarlyFrames: () => ReadonlyArray<[RawData, boolean]>;
  /** Called once the connection has closed (after the hub let it go). */
  readonly onClosed: (conn: Connection, code: number, reason: string, closedBy: ClosedBy) => void;
}

export function createAdmission(deps: {
  config: Config;
  hub: Hub;
  store: Store;
  tickets: TicketService;
  metrics: Metrics;
  verifier: TokenVerifier;
  onChat: ConnectionDeps["onChat"];
  now?: () => number;
}) {
  const { config, hub, tickets } = deps;
  const now = deps.now ?? Date.now;
  const allowed = new Set(config.allowedOrigins);
  const replayBudgets = createReplayBudgets({ historyMaxEvents: config.historyMaxEvents });
  const addresses = createAddressBudget({
    store: deps.store,
    limit: config.ticketRatePerIp,
    onStoreError: () => deps.metrics.storeUnavailable.inc({ operation: "count_redeems" }),
  });

  return {
    /** Resolves to the registered, started connection, or undefined when the attempt was abandoned meanwhile. */
    async admit(attempt: AdmissionAttempt): Promise<Connection | undefined> {
      if (hub.draining) throw new GatewayError("SERVICE_RESTART");
      // Browsers always send Origin; only a browser page can be tricked into
      // connecting, so a missing Origin (a server-side client) is allowed.
      if (attempt.origin !== null && !allowed.has(attempt.origin)) throw new GatewayError("ORIGIN_FORBIDDEN");
      if (Array.isArray(attempt.ticket)) throw new GatewayError("TICKET_MALFORMED");
      // Redemptions per client address share the issuance limit: a legitimate
      // client cannot redeem more tickets than it can get, and guessing
      // tickets is throttled. Refused in memory, before the store is asked.
      if (!addresses.allow(attempt.ip)) {
        throw new GatewayError("RATE_LIMITED", { message: "Too many connection attempts from this address. Retry after a pause." });
      }
      const id = randomUUID();
      const admittedAfter = hub.generation;
      const admitted = await tickets.redeem(attempt.ticket, attempt.origin, hub.connectionSlot(id));
      const { socket } = attempt;
      if (socket.readyState !== socket.OPEN || attempt.abandoned()) {
        hub.release(admitted.sub, id);
        return undefined;
      }
      // The drain began while the store was asked: it closed only the sockets
      // registered then, so this one is told 4012 now rather than left open past it.
      if (hub.draining) {
        hub.release(admitted.sub, id);
        throw new GatewayError("SERVICE_RESTART");
      }
      const conn = new Connection({
        socket,
        id,
        userId: admitted.sub,
        sessionExpiresAt: admitted.sessionExpiresAt,
        config,
        store: deps.store,
        metrics: deps.metrics,
        log: attempt.log,
        verifier: deps.verifier,
        replayBudget: replayBudgets.forConnection(admitted.sub),
        timers: hub.timers,
        onChat: deps.onChat,
        onClosed: (c, code, reason, closedBy) => {
          hub.unregister(c);
          attempt.onClosed(c, code, reason, closedBy);
        },
        now,
      });
      conn.start(admitted.head, attempt.takeEarlyFrames());
      hub.register(conn, { issuedAt: admitted.issuedAt, head: admitted.head, admittedAfter });
      return conn;
    },

    close(): void {
      addresses.close();
    },
  };
}
