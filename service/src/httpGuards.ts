import { ServerResponse, type IncomingMessage, type ServerOptions } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { FastifyInstance } from "fastify";
import { ERRORS, GatewayError, MESSAGES, type ErrorCode } from "./errors.js";

/**
 * What the public HTTP listener refuses to hold for a stranger
 * (docs/protocol.md §8.7): slow requests, upgrades outside /ws, and Node's
 * own parser errors in anything but the gateway's error shape.
 */

/**
 * Bounded timeouts (Fastify's default is 0: a body trickled one byte every
 * 5 s was held forever). Requests here are small (bodies ≤ 64 KiB): 10 s for
 * the headers and 15 s for the whole request are generous even on a slow
 * phone. Keep-alive stays above the 600 s Google's load balancers keep an
 * idle connection to a backend, so the gateway never closes one the balancer
 * is about to reuse (that would be a 502). None of these apply to a
 * WebSocket: Node hands the socket over at the upgrade, and the heartbeat
 * governs it from then on.
 */
export interface HttpTimeouts {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly checkIntervalMs: number;
}

export const HTTP_TIMEOUTS: HttpTimeouts = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  keepAliveTimeoutMs: 620_000,
  /** How often Node checks the two timeouts above (its default, 30 s, would let a slow request live 45 s). */
  checkIntervalMs: 1000,
};

export function httpServerOptions(timeouts: Partial<HttpTimeouts> = {}): {
  requestTimeout: number;
  keepAliveTimeout: number;
  http: ServerOptions;
  clientErrorHandler: (err: Error & { code?: string }, socket: Socket) => void;
} {
  const t = { ...HTTP_TIMEOUTS, ...timeouts };
  return {
    requestTimeout: t.requestTimeoutMs,
    keepAliveTimeout: t.keepAliveTimeoutMs,
    http: { headersTimeout: t.headersTimeoutMs, connectionsCheckingInterval: t.checkIntervalMs },
    clientErrorHandler: answerClientError,
  };
}

/** Node's parser errors, answered in the error shape every other answer uses (Fastify's default has its own shape). */
function answerClientError(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const [status, code]: [number, ErrorCode] =
    err.code === "ERR_HTTP_REQUEST_TIMEOUT"
      ? [408, "REQUEST_TIMEOUT"]
      : err.code === "HPE_HEADER_OVERFLOW"
        ? [431, "HEADERS_TOO_LARGE"]
        : [400, "BAD_REQUEST"];
  const body = JSON.stringify({ error: { code, message: MESSAGES[code] } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${code}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** The one route that upgrades. */
export const WS_ROUTE = "/ws";

/** Marks an upgrade request that /ws does not take, for the hook below. */
const STRAY_UPGRADE = Symbol("strayUpgrade");

/**
 * An upgrade request anywhere but GET /ws: routed through the app like a
 * plain request, so it is answered in HTTP, in the error shape (the hook of
 * refuseStrayUpgrades, or 404), never with 101; the connection is closed
 * once the answer is written.
 */
export function refuseUpgrade(app: FastifyInstance, raw: IncomingMessage, socket: Duplex): void {
  (raw as IncomingMessage & { [STRAY_UPGRADE]?: true })[STRAY_UPGRADE] = true;
  const response = new ServerResponse(raw);
  response.assignSocket(socket as Socket);
  response.on("finish", () => socket.destroy());
  app.routing(raw, response);
}

/** Refuses, before any handler runs, an upgrade request that refuseUpgrade handed to the app. */
export function refuseStrayUpgrades(app: FastifyInstance): void {
  app.addHook("onRequest", async (request) => {
    if ((request.raw as IncomingMessage & { [STRAY_UPGRADE]?: true })[STRAY_UPGRADE] && request.routeOptions.url !== WS_ROUTE) {
      throw new GatewayError("BAD_REQUEST", { message: `WebSocket upgrades are accepted at ${WS_ROUTE} only.` });
    }
  });
}
