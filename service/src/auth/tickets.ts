import { createHash, randomBytes } from "node:crypto";
import { GatewayError } from "../errors.js";
import { storeCall } from "../plugins/store/storeCall.js";
import type { Store, TicketIssueRules, TicketRecord } from "../plugins/store/types.js";
import type { VerifiedToken } from "./verifier.js";

/**
 * Issues and redeems WebSocket tickets (docs/protocol.md §2).
 *
 * A ticket is `<43 chars: 256 random bits, base64url>.<expiry, base36 ms>`.
 * Only its SHA-256 is stored, so a dump of the store yields nothing
 * redeemable. The expiry carried in the ticket only lets a redeem that finds
 * nothing say TICKET_EXPIRED rather than TICKET_INVALID; forging it gains
 * nothing but a different error message.
 */
const TICKET_SHAPE = /^[A-Za-z0-9_-]{43}\.[0-9a-z]{1,11}$/;
/** The per-user issuance limit's fixed window. */
const RATE_WINDOW_MS = 60_000;

export type TicketService = ReturnType<typeof createTicketService>;

export interface IssuedTicket {
  readonly ticket: string;
  readonly expiresAt: number;
}

export function createTicketService(deps: {
  store: Store;
  ttlSeconds: number;
  /** Tickets per user per minute (TICKET_RATE_PER_USER), counted on every instance. */
  perUserPerMinute: number;
  now?: () => number;
  /** Observes the store round trip of every redeem, in seconds. */
  observeRedeem?: (seconds: number) => void;
}) {
  const now = deps.now ?? Date.now;
  const ttlMs = deps.ttlSeconds * 1000;
  const limit = { perUser: deps.perUserPerMinute, windowMs: RATE_WINDOW_MS };

  return {
    ttlSeconds: deps.ttlSeconds,

    /**
     * Counts the request against the user's limit, refuses a token revoked
     * with a not_before, and stores the ticket: one store call. Rejects with
     * RATE_LIMITED (Retry-After: the window's rest) or TOKEN_REVOKED.
     */
    async issue(token: VerifiedToken, origin: string | null): Promise<IssuedTicket> {
      const issuedAt = now();
      const expiresAt = issuedAt + ttlMs;
      const ticket = `${randomBytes(32).toString("base64url")}.${expiresAt.toString(36)}`;
      const record: TicketRecord = { sub: token.sub, sessionExpiresAt: token.expiresAt, origin, issuedAt, expiresAt };
      const rules: TicketIssueRules = { ...limit, ...(token.issuedAt === undefined ? {} : { tokenIssuedAt: token.issuedAt }) };
      const outcome = await storeCall(() => deps.store.issueTicket(hashTicket(ticket), record, ttlMs, rules));
      if (outcome.status === "rate_limited") throw new GatewayError("RATE_LIMITED", { retryAfter: retryAfterSeconds(outcome.resetInMs) });
      if (outcome.status === "token_revoked") throw new GatewayError("TOKEN_REVOKED");
      return { ticket, expiresAt };
    },

    /**
     * Takes the ticket (once, ever) and checks what it is bound to. Rejects with
     * the GatewayError whose close code the socket must end with.
     */
    async redeem(ticket: string | undefined, origin: string | null): Promise<TicketRecord> {
      if (ticket === undefined || ticket === "") throw new GatewayError("TICKET_MISSING");
      if (!TICKET_SHAPE.test(ticket)) throw new GatewayError("TICKET_MALFORMED");
      const started = performance.now();
      const outcome = await storeCall(() => deps.store.redeemTicket(hashTicket(ticket)));
      deps.observeRedeem?.((performance.now() - started) / 1000);
      const at = now();
      if (outcome.status === "used") throw new GatewayError("TICKET_USED");
      if (outcome.status === "unknown") {
        const carried = parseInt(ticket.slice(ticket.indexOf(".") + 1), 36);
        throw new GatewayError(carried <= at ? "TICKET_EXPIRED" : "TICKET_INVALID");
      }
      const { record } = outcome;
      if (record.expiresAt <= at) throw new GatewayError("TICKET_EXPIRED");
      if (record.origin !== null && record.origin !== origin) {
        throw new GatewayError("ORIGIN_FORBIDDEN", { message: "This ticket was issued to another origin." });
      }
      const revokedAt = await storeCall(() => deps.store.revokedAt(record.sub));
      if (revokedAt >= record.issuedAt) {
        throw new GatewayError("SESSION_REVOKED", { message: "This ticket was voided when the session was revoked." });
      }
      if (record.sessionExpiresAt <= at) throw new GatewayError("SESSION_EXPIRED");
      return record;
    },
  };
}

/** Whole seconds until a rate window resets, at least 1 (the Retry-After header). */
export function retryAfterSeconds(resetInMs: number): number {
  return Math.max(1, Math.ceil(resetInMs / 1000));
}

export function hashTicket(ticket: string): string {
  return createHash("sha256").update(ticket).digest("base64url");
}
