import type { FastifyInstance, FastifyRequest } from "fastify";
import { GatewayError } from "../errors.js";
import { logPath } from "../logger.js";
import { storeCall } from "../plugins/store/storeCall.js";
import { AGENT_EVENT_TYPES } from "../plugins/store/types.js";
import type { PublishRequest } from "../realtime/events.js";
import { internalBatchRoutes } from "./internalBatch.js";
import { createSecretCheck } from "./serviceSecret.js";

/**
 * The internal API for agent backends (docs/protocol.md §5). Not routed by
 * the public load balancer; authenticated with the service secret
 * (./serviceSecret.ts: constant-time, current and previous secret).
 */
const MAX_EVENT_BODY_BYTES = 64 * 1024;
const ID = { type: "string", minLength: 1, maxLength: 128 } as const;
/** Clock skew allowed between the caller and the gateway for a revoke's not_before. */
const NOT_BEFORE_SKEW_MS = 60_000;

export async function internalRoutes(app: FastifyInstance): Promise<void> {
  countAndLogCalls(app);
  requireServiceSecret(app);
  publishEventRoute(app);
  // POST /internal/v1/events, behind the same authentication (a child plugin inherits the hook above).
  await app.register(internalBatchRoutes);
  revokeRoute(app);
}

// Every call, refused or not, is counted with the caller's X-Service-Id, and
// logged: at info when it failed, at debug when it succeeded (one line per
// event at info cost more than the event's store call; the metric counts them).
function countAndLogCalls(app: FastifyInstance): void {
  const serviceIdLabel = boundedLabels(MAX_SERVICE_ID_LABELS);
  app.addHook("onResponse", async (request, reply) => {
    const header = request.headers["x-service-id"];
    const serviceId = typeof header === "string" ? header.slice(0, 64) : null;
    // Only a caller that proved the secret may take a label of its own: strangers cannot fill the set.
    const label = reply.statusCode === 401 ? "unauthenticated" : serviceIdLabel(serviceId);
    app.metrics.internalRequests.inc({ service_id: label, status: String(reply.statusCode) });
    const level = reply.statusCode < 300 ? "debug" : "info";
    request.log[level]({ event: "internal_request", service_id: serviceId, route: logPath(request), status: reply.statusCode }, "internal API call");
  });
}

function requireServiceSecret(app: FastifyInstance): void {
  // During a rotation the previous secret is accepted too (docs/operations.md, "Rotate the service secret").
  const secretMatches = createSecretCheck([app.config.serviceSecret, app.config.previousServiceSecret].filter((s): s is string => s !== undefined));
  app.addHook("onRequest", async (request: FastifyRequest) => {
    const header = request.headers.authorization ?? "";
    const presented = header.startsWith("Bearer ") ? header.slice(7) : "";
    const serviceId = request.headers["x-service-id"];
    const ok = secretMatches(presented) && typeof serviceId === "string" && serviceId.length > 0;
    if (!ok) {
      request.log.warn(
        { event: "internal_auth_failed", service_id: typeof serviceId === "string" ? serviceId.slice(0, 64) : null, has_bearer: presented !== "" },
        "internal API call refused",
      );
      throw new GatewayError("SERVICE_UNAUTHORIZED");
    }
  });
}

const USER_PARAMS = {
  type: "object",
  required: ["user_id"],
  properties: { user_id: { type: "string", minLength: 1, maxLength: 256 } },
} as const;

function publishEventRoute(app: FastifyInstance): void {
  app.post<{ Params: { user_id: string }; Body: PublishRequest }>(
    "/internal/v1/users/:user_id/events",
    {
      bodyLimit: MAX_EVENT_BODY_BYTES,
      schema: {
        params: USER_PARAMS,
        body: {
          type: "object",
          required: ["type", "run_id", "thread_id"],
          additionalProperties: false,
          properties: { type: { type: "string", enum: [...AGENT_EVENT_TYPES] }, run_id: ID, thread_id: ID, data: { type: "object" } },
        },
      },
    },
    async (request, reply) => {
      const { type, run_id, thread_id, data = {} } = request.body;
      const result = await app.publisher.publish(request.params.user_id, { type, run_id, thread_id, data });
      request.log.debug({ event: "event_published", service_id: request.headers["x-service-id"], seq: result.seq }, "event published");
      return reply.code(202).send(result);
    },
  );
}

const REVOKE_BODY = {
  type: ["object", "null"],
  additionalProperties: false,
  properties: { not_before: { type: "integer", minimum: 0 } },
} as const;

function revokeRoute(app: FastifyInstance): void {
  app.post<{ Params: { user_id: string }; Body: { not_before?: number } | null }>(
    "/internal/v1/users/:user_id/revoke",
    { bodyLimit: 1024, schema: { params: USER_PARAMS, body: REVOKE_BODY } },
    async (request) => {
      const userId = request.params.user_id;
      const now = Date.now();
      const notBeforeMs = request.body?.not_before === undefined ? now : request.body.not_before * 1000;
      // A not_before in the future is most likely milliseconds sent as seconds; it would refuse even tokens not yet issued.
      if (notBeforeMs > now + NOT_BEFORE_SKEW_MS) {
        throw new GatewayError("BAD_REQUEST", { message: "not_before is in the future: send unix seconds, at most now." });
      }
      // Tokens issued before not_before are refused for as long as such a token may live (REVOCATION_KEEP_SECONDS).
      await storeCall(() => app.store.revokeTokensBefore(userId, notBeforeMs, app.config.revocationKeepSeconds * 1000));
      // Keep the revocation long enough to void every ticket that could still be redeemed.
      const keepMs = (app.config.ticketTtlSeconds + 120) * 1000;
      const closed = await storeCall(() => app.hub.revoke(userId, now, keepMs));
      request.log.info({ event: "session_revoked", service_id: request.headers["x-service-id"], closed, not_before: Math.floor(notBeforeMs / 1000) }, "user sessions revoked");
      return { closed };
    },
  );
}

/** Distinct X-Service-Id values that get a label of their own; the rest count as "other". */
const MAX_SERVICE_ID_LABELS = 20;
const SERVICE_ID_SHAPE = /^[A-Za-z0-9._-]{1,40}$/;

/** The first `max` well-formed values seen keep their name as a label; anything else is "other" (or "none"). */
function boundedLabels(max: number): (value: string | null) => string {
  const known = new Set<string>();
  return (value) => {
    if (value === null || value === "") return "none";
    if (known.has(value)) return value;
    if (known.size >= max || !SERVICE_ID_SHAPE.test(value)) return "other";
    known.add(value);
    return value;
  };
}
