import type { FastifyInstance } from "fastify";
import type { WebSocket } from "ws";
import { GatewayError, isGatewayError, socketCloseCode, socketErrorCode, type ErrorCode } from "../errors.js";
import { WS_ROUTE } from "../httpGuards.js";
import { createAdmission } from "../realtime/admission.js";
import { closeCodeLabel, type ClosedBy } from "../realtime/closeCodes.js";
import { EarlyFrames } from "../realtime/earlyFrames.js";
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
  const admission = createAdmission({
    config,
    hub,
    store,
    tickets: app.tickets,
    metrics,
    verifier: app.verifier,
    onChat: (c, frame) => app.chat(c, frame),
  });
  app.addHook("onClose", async () => admission.close());

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
      let refused = false;
      /** Refuses the socket once, before a Connection exists. */
      const refuse = (code: ErrorCode, message?: string) => {
        if (refused) return;
        refused = true;
        early.discard();
        logAuth(code);
        closeUnauthenticated(socket, code, message);
        logClose(socketCloseCode(code), code, "server");
      };
      // Frames that arrive while the ticket is redeemed are kept for the connection, within a bound.
      const early = new EarlyFrames(socket, () =>
        refuse("RATE_LIMITED", "Too many frames before connection_established. Wait for it, then send."),
      );
      try {
        const conn = await admission.admit({
          socket,
          ticket: request.query.ticket,
          origin: request.headers.origin ?? null,
          ip: request.ip,
          log,
          abandoned: () => refused,
          takeEarlyFrames: () => early.take(),
          onClosed: (c, code, reason, closedBy) => logClose(code, reason, closedBy, c.id),
        });
        if (conn) logAuth("OK", conn.id);
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
