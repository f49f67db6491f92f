import fastifyCors, { type FastifyCorsOptions } from "@fastify/cors";
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Logger } from "pino";
import type { WebSocketServer } from "ws";
import type { Config } from "./config.js";
import { GatewayError, isGatewayError, type ErrorCode } from "./errors.js";
import { httpServerOptions, type HttpTimeouts, refuseStrayUpgrades } from "./httpGuards.js";
import { logPath } from "./logger.js";
import { createTicketService, type TicketService } from "./auth/tickets.js";
import { createTokenVerifier, type TokenVerifier } from "./auth/verifier.js";
import type { KeySetOptions } from "./auth/jwks.js";
import { metricsPlugin } from "./plugins/metrics.js";
import { storePlugin } from "./plugins/store/plugin.js";
import type { Store } from "./plugins/store/types.js";
import type { Connection } from "./realtime/connection.js";
import { createEventPublisher, type EventPublisher } from "./realtime/events.js";
import { createChatHandoff, type ChatHandoff } from "./realtime/chatHandoff.js";
import type { ClientFrame } from "./realtime/frames.js";
import { createHub, type Hub } from "./realtime/hub.js";
import { healthRoutes } from "./routes/health.js";
import { internalRoutes } from "./routes/internal.js";
import { ticketRoutes } from "./routes/ticket.js";
import { attachWebSocketEndpoint } from "./routes/ws.js";

/**
 * Builds the gateway as a Fastify instance, without listening: main.ts owns
 * the process (listen, signals), tests build apps with their own config and
 * close them. No I/O happens at import time.
 *
 * Every resource closes itself: `app.close()` drains the sockets with 4012,
 * ends the hand-offs still in flight, closes the bus and the store and stops the
 * metrics listener. That is the whole graceful shutdown.
 */
export interface AppOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** A store owned by the caller (not closed by the app). Default: Redis at REDIS_URL, else the embedded memory store. */
  readonly store?: Store;
  /** Port of the metrics listener; null for none. Default: config.metricsPort. */
  readonly metricsPort?: number | null;
  readonly instanceId?: string;
  /** The JWKS key set's clock and policy (default: KEY_SET_POLICY); tests shorten the cooldown. */
  readonly keySet?: Pick<KeySetOptions, "now" | "policy">;
  /** Shorter HTTP timeouts, for tests of the timeouts themselves. Default: HTTP_TIMEOUTS. */
  readonly httpTimeouts?: Partial<HttpTimeouts>;
}

declare module "fastify" {
  interface FastifyInstance {
    config: Config;
    verifier: TokenVerifier;
    tickets: TicketService;
    hub: Hub;
    publisher: EventPublisher;
    chat: (conn: Connection, frame: Extract<ClientFrame, { type: "chat_message" }>) => Promise<void>;
    /** The sockets of GET /ws (routes/ws.ts upgrades them itself). */
    websocketServer: WebSocketServer;
  }
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { config } = options;
  const app = createFastify(options);
  app.decorate("config", config);

  await app.register(metricsPlugin, { port: options.metricsPort === undefined ? config.metricsPort : options.metricsPort, host: config.host });
  await app.register(storePlugin, { config, store: options.store });

  decorateAuth(app, options);
  const { hub, handoff } = decorateRealtime(app, options);
  const wsOptions = webSocketOptions(config);
  drainBeforeClose(app, hub, handoff);

  await registerHttpConventions(app);
  refuseStrayUpgrades(app);
  await app.register(healthRoutes);
  await app.register(ticketRoutes);
  await app.register(internalRoutes);
  app.decorate("websocketServer", attachWebSocketEndpoint(app, wsOptions));
  return app;
}

function createFastify(options: AppOptions): FastifyInstance {
  const { config } = options;
  return Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    // One access line per request is written below, with the ticket redacted
    // from the URL; Fastify's own request lines would log the raw URL.
    logController: new LogController({ disableRequestLogging: true }),
    // Trust exactly the configured number of proxy hops for the client IP.
    trustProxy: (_address: string, hop: number) => hop < config.trustProxyHops,
    bodyLimit: 64 * 1024,
    // Reject unknown fields instead of silently dropping them: a publisher
    // that sends `seq` should learn that it does not choose it.
    ajv: { customOptions: { removeAdditional: false } },
    // User ids in internal API paths may be up to 256 characters, percent-encoded.
    routerOptions: { maxParamLength: 1024 },
    // Bounded request timeouts and Node's parser errors in the error shape (httpGuards.ts says why).
    ...httpServerOptions(options.httpTimeouts),
    // Errors the router raises before any route runs (a path that is not a
    // valid URL) get the same JSON shape as every other error.
    frameworkErrors: (error, _request, reply) => {
      void (reply as FastifyReply).code(400).send({ error: { code: "BAD_REQUEST", message: `The request is malformed (${error.code}).` } });
    },
  });
}

/** The token verifier (JWKS or HS256) and the ticket service. */
function decorateAuth(app: FastifyInstance, options: AppOptions): void {
  const { config } = options;
  const verifier = createTokenVerifier(config.jwt, {
    keySet: {
      ...options.keySet,
      // One line per change of the JWKS's state, not one per refused token.
      onStateChange: (state, reason) => {
        if (state === "ok") app.log.info({ event: "jwks_state", state }, "the auth service's key set is reachable again");
        else app.log.warn({ event: "jwks_state", state, reason }, state === "stale" ? "JWKS unreachable: serving the last good key set" : "JWKS unreachable and no usable key set: tokens get 503 AUTH_UNAVAILABLE");
      },
    },
  });
  void verifier.warm();
  app.decorate("verifier", verifier);
  app.decorate(
    "tickets",
    createTicketService({
      store: app.store,
      ttlSeconds: config.ticketTtlSeconds,
      perUserPerMinute: config.ticketRatePerUser,
      observeRedeem: (s) => app.metrics.ticketRedeemSeconds.observe(s),
    }),
  );
}

/** The hub, the event publisher and the chat hand-off. */
function decorateRealtime(app: FastifyInstance, options: AppOptions): { hub: Hub; handoff: ChatHandoff } {
  const { config } = options;
  const hub = createHub({ store: app.store, metrics: app.metrics, log: app.log, config, instanceId: options.instanceId });
  const publisher = createEventPublisher({
    store: app.store,
    metrics: app.metrics,
    limits: { maxEvents: config.historyMaxEvents, ttlMs: config.historyTtlSeconds * 1000 },
  });
  // The gateway runs no agent of its own: each chat_message goes to the agent backend by webhook.
  const handoff = createChatHandoff({ webhook: config.agentWebhook, store: app.store, metrics: app.metrics, log: app.log });
  app.decorate("hub", hub);
  app.decorate("publisher", publisher);
  app.decorate("chat", (conn: Connection, frame: Extract<ClientFrame, { type: "chat_message" }>) => handoff.handle(conn, frame));
  return { hub, handoff };
}

function webSocketOptions(config: Config) {
  // (A variable, not a literal: @types/ws 8.18 does not declare maxPendingAutoPongs yet.)
  const wsOptions = {
    // Well above MAX_MESSAGE_BYTES: ws would close a bigger frame with a bare
    // 1009 and no reason; the connection checks the size and says MESSAGE_TOO_BIG.
    maxPayload: Math.max(config.maxMessageBytes * 16, 1024 * 1024),
    // UTF-8 is checked by the connection, which answers MESSAGE_MALFORMED instead of ws's 1007.
    skipUTF8Validation: true,
    perMessageDeflate: false,
    // ws terminates a peer with this many unsent automatic pongs (60 by
    // default) without a close frame. Keep it above the inbound frame budget,
    // so a protocol-ping flood meets 4429 RATE_LIMITED first.
    maxPendingAutoPongs: config.maxFramesPerSecond * 4 + 10,
    // Subprotocols carry nothing the gateway reads. A browser that asked for
    // one fails the handshake (1006) when none is chosen, so a short plain
    // name is echoed and the client reads the 4400 that follows; a value that
    // could hold a credential (long, or with dots) is never echoed.
    handleProtocols: (protocols: Set<string>) => [...protocols].find((p) => p.length <= 32 && !p.includes(".")) ?? false,
  };
  return wsOptions;
}

// Drain with 4012 SERVICE_RESTART before the server closes, so clients see it and never 1006.
function drainBeforeClose(app: FastifyInstance, hub: Hub, handoff: ChatHandoff): void {
  app.addHook("preClose", async () => {
    await hub.drain(Math.max(500, app.config.shutdownGraceMs - 2000));
    handoff.close();
    hub.close();
    await new Promise<void>((resolve) => app.websocketServer.close(() => resolve()));
    // server.close() waits for every HTTP connection to end, including ones
    // that never sent a request (browsers open those ahead of time), which
    // Node keeps until its 60 s header timeout. Give in-flight requests a
    // second, then cut the rest, so a drain ends well inside Cloud Run's 10 s.
    setTimeout(() => app.server.closeAllConnections(), 1000).unref();
  });

}

/** How much of a too-large body is read and dropped so that its 413 reaches the sender (more is cut off). */
const LINGER_MAX_BYTES = 16 * 1024 * 1024;

/** CORS for the allowed origins only, the JSON body rules, the error shape and the access log. */
async function registerHttpConventions(app: FastifyInstance): Promise<void> {
  // An empty body is allowed on the ticket endpoint ("empty body or {}"), even
  // with Content-Type: application/json; text/plain is not JSON and gets 415.
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    if (body === "") return done(null, {});
    parseJson(request, body as string, (err, value) => done(err ? new GatewayError("BAD_REQUEST", { message: "The body is not valid JSON." }) : null, value));
  });

  // Before @fastify/cors registers its `OPTIONS *` route: a route takes the
  // error handler in force when it is built, and the fuzz drill found that
  // route answering in Fastify's own shape when the handler came later.
  app.setNotFoundHandler(async () => {
    throw new GatewayError("NOT_FOUND");
  });

  app.setErrorHandler(async (err: FastifyError | GatewayError, request, reply) => {
    const error = toGatewayError(err);
    if (error.code === "INTERNAL_ERROR") request.log.error({ err, event: "http_internal_error" }, "unexpected error");
    if (error.code === "TICKET_STORE_UNAVAILABLE") {
      app.metrics.storeUnavailable.inc({ operation: request.routeOptions.url ?? "unknown" });
      request.log.error({ event: "store_unavailable", operation: request.routeOptions.url }, "the store could not be reached");
    }
    if (error.status === 401) {
      reply.header("www-authenticate", error.code === "TOKEN_MISSING" || error.code === "SERVICE_UNAUTHORIZED" ? "Bearer" : 'Bearer error="invalid_token"');
    }
    if (error.status === 429 || error.status === 503) reply.header("retry-after", String(error.retryAfter ?? 1));
    // Fastify closes after a 413 with the body unread; the sender, still
    // sending, then gets a reset that loses the answer (drill 4). A body up to
    // LINGER_MAX_BYTES is read and dropped by Node instead, so the 413 arrives.
    if (error.status === 413 && Number(request.headers["content-length"]) <= LINGER_MAX_BYTES) reply.removeHeader("connection");
    if (isApiRoute(request)) app.metrics.ticketRequests.inc({ status: String(error.status), code: error.code });
    return reply.code(error.status).send({ error: { code: error.code, message: error.message } });
  });

  const corsForApi = apiCorsOptions(new Set(app.config.allowedOrigins));
  // Decided on the routed path, not the raw URL: the router decodes
  // `/%61pi/…` to `/api/…`, and a check on the raw URL would let it by.
  await app.register(fastifyCors, { delegator: (request, done) => done(null, isApiRoute(request) ? corsForApi(request) : { origin: false }) });
  // Declared so a preflight is routed to an /api/ path (not @fastify/cors's
  // `OPTIONS *`); @fastify/cors answers it in onRequest, before this handler.
  app.options("/api/v1/auth/websocket_ticket", async () => {
    throw new GatewayError("ORIGIN_FORBIDDEN");
  });

  app.addHook("onResponse", async (request, reply) => {
    if (isApiRoute(request) && reply.statusCode < 400) app.metrics.ticketRequests.inc({ status: String(reply.statusCode), code: "OK" });
    const line = { event: "http_request", method: request.method, url: logPath(request), status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (reply.statusCode >= 500) request.log.warn(line, "request failed");
    else request.log.debug(line, "request");
  });
}

/**
 * CORS on the /api/ routes (docs/protocol.md §2, §8.3): an allowed origin is
 * echoed, with Retry-After readable by the page; any other origin, or a
 * preflight without one, is 403 ORIGIN_FORBIDDEN in the error shape; a
 * request without Origin (not a browser) gets no CORS headers.
 */
function apiCorsOptions(allowed: ReadonlySet<string>): (request: FastifyRequest) => FastifyCorsOptions {
  return (request) => ({
    origin: (origin, done) => {
      if (origin === undefined && request.method !== "OPTIONS") done(null, false);
      else if (origin !== undefined && allowed.has(origin)) done(null, origin);
      else done(new GatewayError("ORIGIN_FORBIDDEN"), false);
    },
    methods: "POST",
    allowedHeaders: "authorization, content-type",
    exposedHeaders: "retry-after",
    maxAge: 600,
    // An allowed origin's OPTIONS is a preflight even without Access-Control-Request-Method, as before (204, not 400 text/plain).
    strictPreflight: false,
  });
}

function isApiRoute(request: FastifyRequest): boolean {
  return request.routeOptions.url?.startsWith("/api/") === true;
}

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "BODY_TOO_LARGE",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "UNSUPPORTED_MEDIA_TYPE",
};

function toGatewayError(err: FastifyError | GatewayError): GatewayError {
  if (isGatewayError(err)) return err;
  const mapped = FASTIFY_CODES[err.code];
  if (mapped) return new GatewayError(mapped);
  if (err.validation) return new GatewayError("BAD_REQUEST", { message: `Invalid request: ${err.message}` });
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return new GatewayError("BAD_REQUEST");
  return new GatewayError("INTERNAL_ERROR", { cause: err });
}
