import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { GatewayError } from "../errors.js";
import { storeCall } from "../auth/tickets.js";
import { AGENT_EVENT_TYPES } from "../plugins/store/types.js";
import type { PublishRequest } from "../realtime/events.js";
import { internalBatchRoutes } from "./internalBatch.js";

/**
 * The internal API for agent backends (docs/protocol.md §5). Not routed by
 * the public load balancer; authenticated with the service secret, compared
 * in constant time (over SHA-256 digests, so the length leaks nothing either).
 */
const MAX_EVENT_BODY_BYTES = 64 * 1024;
const ID = { type: "string", minLength: 1, maxLength: 128 } as const;

export async function internalRoutes(app: FastifyInstance): Promise<void> {
  // During a rotation the previous secret is accepted too (docs/operations.md, "Rotate the service secret").
  const accepted = [app.config.serviceSecret, app.config.previousServiceSecret].filter((s): s is string => s !== undefined).map(digest);

  app.addHook("onRequest", async (request: FastifyRequest) => {
    const header = request.headers.authorization ?? "";
    const presented = header.startsWith("Bearer ") ? header.slice(7) : "";
    const serviceId = request.headers["x-service-id"];
    const ok = matchesAny(digest(presented), accepted) && typeof serviceId === "string" && serviceId.length > 0;
    if (!ok) {
      request.log.warn(
        { event: "internal_auth_failed", service_id: typeof serviceId === "string" ? serviceId.slice(0, 64) : null, has_bearer: presented !== "" },
        "internal API call refused",
      );
      throw new GatewayError("SERVICE_UNAUTHORIZED");
    }
  });

  const params = {
    type: "object",
    required: ["user_id"],
    properties: { user_id: { type: "string", minLength: 1, maxLength: 256 } },
  } as const;

  app.post<{ Params: { user_id: string }; Body: PublishRequest }>(
    "/internal/v1/users/:user_id/events",
    {
      bodyLimit: MAX_EVENT_BODY_BYTES,
      schema: {
        params,
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

  // POST /internal/v1/events, behind the same authentication (a child plugin inherits the hook above).
  await app.register(internalBatchRoutes);

  app.post<{ Params: { user_id: string } }>("/internal/v1/users/:user_id/revoke", { bodyLimit: 1024, schema: { params } }, async (request) => {
    const userId = request.params.user_id;
    // Keep the revocation long enough to void every ticket that could still be redeemed.
    const keepMs = (app.config.ticketTtlSeconds + 120) * 1000;
    const closed = await storeCall(() => app.hub.revoke(userId, Date.now(), keepMs));
    request.log.info({ event: "session_revoked", service_id: request.headers["x-service-id"], closed }, "user sessions revoked");
    return { closed };
  });
}

/** Compares against every accepted digest, always all of them, so the time taken does not tell which one matched. */
function matchesAny(presented: Buffer, accepted: readonly Buffer[]): boolean {
  let ok = false;
  for (const expected of accepted) ok = timingSafeEqual(presented, expected) || ok;
  return ok;
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}
