import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import type { WebSocket } from "ws";
import { GatewayError, isGatewayError, socketCloseCode, socketErrorCode, type ErrorCode } from "../errors.js";
import { storeCall } from "../plugins/store/storeCall.js";
import { WS_ROUTE } from "../httpGuards.js";
import { closeCodeLabel, type ClosedBy } from "../realtime/closeCodes.js";
import { Connection } from "../realtime/connection.js";
import { EarlyFrames } from "../realtime/earlyFrames.js";
import { createReplayBudgets } from "../realtime/replayBudget.js";
import { errorFrame } from "../realtime/frames.js";

/**
 * GET /ws?ticket=… (docs/protocol.md §3).
 *
 * The upgrade is accepted *before* the ticket is checked, on purpose: a
 * browser never learns the HTTP status of a refused upgrade, it only sees
 * 1006, the same as a network drop. Accepting first lets every refusal be
 * said as an error frame and a close code the browser can read.
 *
 * The ticket is the only way in. Headers (Authorization, test or "fast path"
 * headers), subprotocols (`jwt-auth`) and other query parameters (`token`)
 * are never read here, so a request that tries them has no ticket: 4400.
 */
export async function wsRoutes(app: FastifyInstance): Promise<void> {
  const { config, hub, store, metrics } = app;
  const allowed = new Set(config.allowedOrigins);
  const now = () => Date.now();
  const replayBudgets = createReplayBudgets({ historyMaxEvents: config.historyMaxEvents });

  app.route<{ Querystring: Record<string, string | string[] | undefined> }>({
    method: "GET",
    url: WS_ROUTE,
    // A plain GET without an upgrade.
    handler: async () => {
      throw new GatewayError("UPGRADE_REQUIRED");
    },
    wsHandler: async (socket: WebSocket, request) => {
      const log = request.log;
      const logClose = (code: number, reason: string, closedBy: ClosedBy, connectionId?: string) => {
        const label = closeCodeLabel(code, closedBy);
        metrics.wsCloses.inc({ code: label, closed_by: closedBy });
        // `code` is the label (a string), so the log-based metric and the 1011 alert read what the metric says.
        log.info({ event: "ws_close", code: label, closed_by: closedBy, reason, connection_id: connectionId }, "websocket closed");
      };
      /** The one ws_auth line (and its metric) per socket: accepted, or refused with the code. */
      const logAuth = (reason: ErrorCode | "OK", connectionId?: string) => {
        const outcome = reason === "OK" ? "accepted" : "rejected";
        metrics.wsAuth.inc({ outcome, reason });
        const text = outcome === "accepted" ? "websocket authenticated" : "websocket authentication refused";
        log.info({ event: "ws_auth", outcome, reason, connection_id: connectionId }, text);
      };
      let conn: Connection | undefined;
      let refused = false;
      /** Refuses the socket once: through its Connection when there is one (which logs the close), else directly. */
      const refuse = (code: ErrorCode, message?: string) => {
        if (refused) return;
        refused = true;
        early.discard();
        logAuth(code);
        if (conn) return conn.close(code, message);
        closeUnauthenticated(socket, code, message);
        logClose(socketCloseCode(code), code, "server");
      };
      // Frames that arrive while the ticket is redeemed are kept for the connection, within a bound.
      const early = new EarlyFrames(socket, () =>
        refuse("RATE_LIMITED", "Too many frames before connection_established. Wait for it, then send."),
      );

      if (hub.draining) return refuse("SERVICE_RESTART");
      const origin = request.headers.origin ?? null;
      try {
        // Browsers always send Origin; only a browser page can be tricked into
        // connecting, so a missing Origin (a server-side client) is allowed.
        if (origin !== null && !allowed.has(origin)) throw new GatewayError("ORIGIN_FORBIDDEN");
        const ticket = request.query.ticket;
        if (Array.isArray(ticket)) throw new GatewayError("TICKET_MALFORMED");
        // Redemptions per client IP share the issuance limit: a legitimate
        // client cannot redeem more tickets than it can get, and guessing
        // tickets is throttled. Counted beside the redeem, not before it, so a
        // connect costs no extra round trip; a correct guess over the limit is
        // still burned and refused.
        const [attempts, redeemed] = await Promise.allSettled([
          storeCall(() => store.hit(`redeem:${request.ip}`, 60_000)),
          app.tickets.redeem(ticket, origin),
        ]);
        if (attempts.status === "fulfilled" && attempts.value.count > config.ticketRatePerIp) {
          throw new GatewayError("RATE_LIMITED", { message: "Too many connection attempts from this address. Retry after a pause." });
        }
        if (redeemed.status === "rejected") throw redeemed.reason;
        const record = redeemed.value;
        const id = randomUUID();
        if (!(await storeCall(() => store.addConnection(record.sub, id, config.maxConnectionsPerUser, hub.connectionTtlMs)))) {
          throw new GatewayError("TOO_MANY_CONNECTIONS");
        }
        if (socket.readyState !== socket.OPEN || refused) {
          store.removeConnection(record.sub, id).catch(() => undefined);
          return;
        }
        conn = new Connection({
          socket,
          id,
          userId: record.sub,
          sessionExpiresAt: record.sessionExpiresAt,
          config,
          store,
          metrics,
          log,
          verifier: app.verifier,
          replayBudget: replayBudgets.forConnection(record.sub),
          timers: hub.timers,
          onChat: (c, frame) => app.chat(c, frame),
          onClosed: (c, code, reason, closedBy) => {
            hub.unregister(c);
            logClose(code, reason, closedBy, c.id);
          },
          now,
        });
        // Subscribe first, then read the stream head: an event published after
        // the read is certain to arrive on the subscription.
        await hub.register(conn);
        const [head, revokedAt] = await storeCall(() => Promise.all([store.head(record.sub), store.revokedAt(record.sub)]));
        // A revoke that raced this connect (after the redeem, before the subscription) still ends it.
        if (revokedAt >= record.issuedAt) throw new GatewayError("SESSION_REVOKED");
        // Refused meanwhile (too many early frames): the close is under way, and the connection's close handler cleans up.
        if (refused) return;
        logAuth("OK", id);
        conn.start(head, early.take());
      } catch (err) {
        const code = socketErrorCode(err);
        if (code === "INTERNAL_ERROR") log.error({ err, event: "ws_internal_error" }, "unexpected error while authenticating a websocket");
        refuse(code, isGatewayError(err) ? err.message : undefined);
      }
    },
  });
}

/** Before a Connection exists: the error frame, then the close, then a bounded wait for the peer. */
function closeUnauthenticated(socket: WebSocket, code: ErrorCode, message?: string): void {
  const close = socketCloseCode(code);
  if (socket.readyState !== socket.OPEN) return;
  socket.send(errorFrame(code, { fatal: true, message }));
  socket.close(close, code);
  setTimeout(() => socket.terminate(), 3000).unref();
}
