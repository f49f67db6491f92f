import type { FastifyInstance } from "fastify";
import { GatewayError } from "../errors.js";
import { bearerToken, issuedBefore } from "../auth/verifier.js";
import { storeCall } from "../plugins/store/storeCall.js";

/**
 * POST /api/v1/auth/websocket_ticket (docs/protocol.md §2): the only way to a
 * WebSocket. The per-IP limit is counted before the token is even verified,
 * so a flood of bad tokens is throttled too; the per-user limit after.
 */
const WINDOW_MS = 60_000;

export async function ticketRoutes(app: FastifyInstance): Promise<void> {
  const { config } = app;

  app.post("/api/v1/auth/websocket_ticket", { bodyLimit: 1024 }, async (request, reply) => {
    await limit(app, `ip:${request.ip}`, config.ticketRatePerIp);
    const token = bearerToken(request.headers.authorization);
    if (token === undefined) throw new GatewayError("TOKEN_MISSING");
    const verified = await app.verifier.verify(token);
    const [, notBefore] = await Promise.all([
      limit(app, `user:${verified.sub}`, config.ticketRatePerUser),
      storeCall(() => app.store.tokensNotBefore(verified.sub)),
    ]);
    if (issuedBefore(verified, notBefore)) throw new GatewayError("TOKEN_REVOKED");

    const origin = request.headers.origin ?? null;
    const { ticket, expiresAt } = await app.tickets.issue(verified, origin);
    app.metrics.ticketsIssued.inc();
    // At info: the log-based metric behind on-call's "ticket issue rate" chart counts these lines.
    request.log.info({ event: "ticket_issued" }, "ticket issued");
    return reply
      .code(201)
      .header("cache-control", "no-store")
      .send({ ticket, expires_in: app.tickets.ttlSeconds, expires_at: new Date(expiresAt).toISOString() });
  });
}

async function limit(app: FastifyInstance, key: string, perMinute: number): Promise<void> {
  const { count, resetInMs } = await storeCall(() => app.store.hit(key, WINDOW_MS));
  if (count > perMinute) throw new GatewayError("RATE_LIMITED", { retryAfter: Math.max(1, Math.ceil(resetInMs / 1000)) });
}
