import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import proxyAddr from "@fastify/proxy-addr";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import { WebSocketServer, type ServerOptions, type WebSocket } from "ws";
import { GatewayError, isGatewayError, socketCloseCode, socketErrorCode, type ErrorCode } from "../errors.js";
import { refuseUpgrade, WS_ROUTE } from "../httpGuards.js";
import { createAdmission } from "../realtime/admission.js";
import { closeCodeLabel, type ClosedBy } from "../realtime/closeCodes.js";
import { EarlyFrames } from "../realtime/earlyFrames.js";
import { closeWithError } from "../realtime/closeProtocol.js";
import type { Metrics } from "../plugins/metrics.js";

/**
 * GET /ws?ticket=… (docs/protocol.md §3).
 *
 * Upgraded by `ws` itself on the server's 'upgrade' event, not through
 * Fastify's request machinery (@fastify/websocket kept the request, its
 * response and the route's closures alive for the socket's lifetime: ~3 KiB
 * per idle socket, docs/benchmarks.md "Memory"). What the socket needs of the
 * request (the ticket, Origin, the client address as Fastify's trustProxy
 * computes it) is read at the upgrade; the log lines carry a request id and
 * never the URL. Upgrades on any other path, or not a GET, go through
 * Fastify to be refused in HTTP (httpGuards.ts refuseUpgrade).
 *
 * The upgrade is accepted *before* the ticket is checked, on purpose: a
 * browser never learns the HTTP status of a refused upgrade, it only sees
 * 1006, the same as a network drop. Accepting first lets every refusal be
 * said as an error frame and a close code the browser can read.
 *
 * The ticket is the only way in: nothing else in the request (headers,
 * subprotocols, other query parameters) is read to authenticate, so a
 * request without a ticket gets 4400.
 */
export function attachWebSocketEndpoint(app: FastifyInstance, wsOptions: ServerOptions): WebSocketServer {
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
  const wss = new WebSocketServer({ ...wsOptions, noServer: true });
  // The same function Fastify is given as trustProxy (app.ts).
  const trust = (_address: string, hop: number) => hop < config.trustProxyHops;
  let requests = 0;

  // A plain GET without an upgrade.
  app.get(WS_ROUTE, async () => {
    throw new GatewayError("UPGRADE_REQUIRED");
  });

  app.server.on("upgrade", (raw: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Node takes its error listener off the socket before 'upgrade'; a reset mid-handshake must not throw.
    socket.on("error", destroyOnError);
    if (raw.method !== "GET" || pathOf(raw.url) !== WS_ROUTE) return refuseUpgrade(app, raw, socket);
    wss.handleUpgrade(raw, socket, head, (ws) => {
      socket.removeListener("error", destroyOnError);
      // ws reports a peer's protocol violation (a reserved opcode, a frame over
      // maxPayload) as 'error', then closes with 1002/1009 itself: an 'error'
      // with no listener would end the process. One shared listener, no closure.
      ws.on("error", ignoreSocketError);
      // Only these outlive the handshake, not the request (docs/benchmarks.md "Memory").
      const log = app.log.child({ reqId: `ws-${(++requests).toString(36)}` });
      void admitSocket(admission, metrics, ws, log, { query: queryOf(raw.url), origin: raw.headers.origin ?? null, ip: clientIp(raw, trust) });
    });
  });
  app.addHook("onClose", async () => admission.close());
  return wss;
}

type Admission = ReturnType<typeof createAdmission>;
type UpgradeRequest = { query: URLSearchParams; origin: string | null; ip: string };

/** Redeems the socket's ticket into a Connection, or refuses the socket with its close code; logs the outcome. */
async function admitSocket(admission: Admission, metrics: Metrics, socket: WebSocket, log: FastifyBaseLogger, request: UpgradeRequest) {
  let refused = false;
  /** Refuses the socket once, before a Connection exists. */
  const refuse = (code: ErrorCode, message?: string) => {
    if (refused) return;
    refused = true;
    early.discard();
    logAuth(metrics, log, code);
    // Before a Connection exists: the same close protocol, straight on the socket.
    if (socket.readyState === socket.OPEN) closeWithError(socket, code, message);
    logClose(metrics, log, socketCloseCode(code), code, "server");
  };
  // Frames that arrive while the ticket is redeemed are kept for the connection, within a bound.
  const early = new EarlyFrames(socket, () => refuse("RATE_LIMITED", "Too many frames before connection_established. Wait for it, then send."));
  const tickets = request.query.getAll("ticket");
  try {
    const conn = await admission.admit({
      socket,
      ticket: tickets.length > 1 ? tickets : tickets[0],
      origin: request.origin,
      ip: request.ip,
      log,
      abandoned: () => refused,
      takeEarlyFrames: () => early.take(),
      onClosed: (c, code, reason, closedBy) => logClose(metrics, log, code, reason, closedBy, c.id),
    });
    if (conn) logAuth(metrics, log, "OK", conn.id);
  } catch (err) {
    const code = socketErrorCode(err);
    if (code === "INTERNAL_ERROR") log.error({ err, event: "ws_internal_error" }, "unexpected error while authenticating a websocket");
    refuse(code, isGatewayError(err) ? err.message : undefined);
  }
}

function logClose(metrics: Metrics, log: FastifyBaseLogger, code: number, reason: string, closedBy: ClosedBy, connectionId?: string): void {
  const label = closeCodeLabel(code, closedBy);
  metrics.wsCloses.inc({ code: label, closed_by: closedBy });
  // `code` is the label (a string), so the log-based metric and the 1011 alert read what the metric says.
  log.info({ event: "ws_close", code: label, closed_by: closedBy, reason, connection_id: connectionId }, "websocket closed");
}

/** The one ws_auth line (and its metric) per socket: accepted, or refused with the code. */
function logAuth(metrics: Metrics, log: FastifyBaseLogger, reason: ErrorCode | "OK", connectionId?: string): void {
  const outcome = reason === "OK" ? "accepted" : "rejected";
  metrics.wsAuth.inc({ outcome, reason });
  const text = outcome === "accepted" ? "websocket authenticated" : "websocket authentication refused";
  log.info({ event: "ws_auth", outcome, reason, connection_id: connectionId }, text);
}

/** The path of a request target, without its query. */
function pathOf(url = ""): string {
  const q = url.indexOf("?");
  return q === -1 ? url : url.slice(0, q);
}

/** The query of a request target (URLSearchParams never throws, whatever the bytes). */
function queryOf(url = ""): URLSearchParams {
  const q = url.indexOf("?");
  return new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
}

/** The client address exactly as Fastify computes request.ip with the same trustProxy function. */
function clientIp(raw: IncomingMessage, trust: (address: string, hop: number) => boolean): string {
  const addresses = proxyAddr.all(raw, trust);
  return addresses[addresses.length - 1] ?? "";
}

function destroyOnError(this: Duplex): void {
  this.destroy();
}

/** The socket's close (ws_close, with its code) says all there is to say. */
function ignoreSocketError(): void {}

