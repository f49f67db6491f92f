import type { FastifyInstance } from "fastify";
import { GatewayError } from "../errors.js";
import { retryAfterSeconds } from "../auth/tickets.js";
import { bearerToken, type VerifiedToken } from "../auth/verifier.js";
import { storeCall } from "../plugins/store/storeCall.js";

/**
 * POST /api/v1/auth/websocket_ticket (docs/protocol.md §2): the only way to a
 * WebSocket. The per-IP limit is counted before the token is even verified,
 * so a flood of bad tokens is throttled too; the per-user limit after.
 *
 * One store round trip on the happy path. The per-user counter, the
 * not-before check and the ticket write are one script on the user's hash
 * slot (tickets.issue → store.issueTicket). The per-IP counter cannot join
 * it (an address is not a user: another slot on Redis Cluster), so it is
 * sent before the token is verified and awaited with the script, in
 * parallel. The price, where the sequential version stopped first: a
 * request with a valid token refused for its address still uses one of its
 * user's tickets for the minute, and leaves an unreturned ticket in the
 * store (it expires unredeemed: nobody ever saw it). Only requests carrying
 * a valid token of the user count against the user, as before.
 */
const WINDOW_MS = 60_000;

type Counted = { count: number; resetInMs: number };

export async function ticketRoutes(app: FastifyInstance): Promise<void> {
  const { config } = app;

  app.post("/api/v1/auth/websocket_ticket", { bodyLimit: 1024 }, async (request, reply) => {
    const ipHit = settle(storeCall(() => app.store.hit(`ip:${request.ip}`, WINDOW_MS)));
    let verified: VerifiedToken;
    try {
      const token = bearerToken(request.headers.authorization);
      if (token === undefined) throw new GatewayError("TOKEN_MISSING");
      verified = await app.verifier.verify(token);
    } catch (err) {
      // Over the address's limit, the answer is 429 whatever the token, as when it was checked first.
      refuseOverIpLimit(await ipHit, config.ticketRatePerIp);
      throw err;
    }
    const origin = request.headers.origin ?? null;
    const [ip, issued] = await Promise.all([ipHit, settle(app.tickets.issue(verified, origin))]);
    refuseOverIpLimit(ip, config.ticketRatePerIp);
    if ("error" in issued) throw issued.error;
    const { ticket, expiresAt } = issued.value;
    app.metrics.ticketsIssued.inc();
    // At info: the log-based metric behind on-call's "ticket issue rate" chart counts these lines.
    request.log.info({ event: "ticket_issued" }, "ticket issued");
    return reply
      .code(201)
      .header("cache-control", "no-store")
      .send({ ticket, expires_in: app.tickets.ttlSeconds, expires_at: new Date(expiresAt).toISOString() });
  });
}

/** Throws the store's failure, or RATE_LIMITED when the address is over its limit. */
function refuseOverIpLimit(hit: Settled<Counted>, perMinute: number): void {
  if ("error" in hit) throw hit.error;
  const { count, resetInMs } = hit.value;
  if (count > perMinute) throw new GatewayError("RATE_LIMITED", { retryAfter: retryAfterSeconds(resetInMs) });
}

type Settled<T> = { value: T } | { error: unknown };

/** The promise's outcome as a value: handled from the start, so a failure while another await is pending is never unhandled. */
function settle<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}
