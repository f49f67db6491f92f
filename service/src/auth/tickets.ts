import { createHash, randomBytes } from "node:crypto";
import { GatewayError } from "../errors.js";
import { storeCall } from "../plugins/store/storeCall.js";
import { SLOT_COUNT, userSlot } from "../plugins/store/keys.js";
import type { AdmitOutcome, Store, StreamHead, TicketIssueRules, TicketKey, TicketRecord } from "../plugins/store/types.js";
import type { VerifiedToken } from "./verifier.js";

/**
 * Issues and redeems WebSocket tickets (docs/protocol.md §2).
 *
 * A ticket is `<43 chars: 256 random bits, base64url>.<expiry, base36 ms>.<slot tag, base36>`.
 * Only its SHA-256 is stored, so a dump of the store yields nothing
 * redeemable. The expiry carried in the ticket only lets a redeem that finds
 * nothing say TICKET_EXPIRED rather than TICKET_INVALID; forging it gains
 * nothing but a different error message.
 *
 * The slot tag says where the store keeps the ticket: in the hash slot of its
 * user's keys, so that one script takes the ticket and admits the connection
 * (store.admit, one round trip). It is the slot plus the ticket's first 14
 * random bits, mod 16384: on its own it is uniformly random, so tickets of one
 * user cannot be linked by their tags, and it never names the user. Whoever
 * holds the whole ticket can work out the slot, which is 14 bits of a hash of
 * the user id shared with ~1/16384 of all users; the whole ticket also lets
 * them redeem it, which tells them the user id outright, so nothing is lost.
 * A ticket without a tag (issued before tags) is well-shaped but found nowhere.
 */
const TICKET_SHAPE = /^[A-Za-z0-9_-]{43}\.[0-9a-z]{1,11}(?:\.[0-9a-z]{1,3})?$/;
/** The per-user issuance limit's fixed window. */
const RATE_WINDOW_MS = 60_000;

export type TicketService = ReturnType<typeof createTicketService>;

export interface IssuedTicket {
  readonly ticket: string;
  readonly expiresAt: number;
}

/** The connection a redeem registers, under the per-user limit. */
export interface ConnectionSlot {
  readonly id: string;
  readonly max: number;
  readonly ttlMs: number;
}

/** What a ticket was bound to, and the user's stream head read in the same step. */
export interface AdmittedTicket extends TicketRecord {
  readonly head: StreamHead;
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
      const secret = randomBytes(32);
      const slot = userSlot(token.sub);
      const tag = (slot + slotMask(secret)) % SLOT_COUNT;
      const ticket = `${secret.toString("base64url")}.${expiresAt.toString(36)}.${tag.toString(36)}`;
      const record: TicketRecord = { sub: token.sub, sessionExpiresAt: token.expiresAt, origin, issuedAt, expiresAt };
      const rules: TicketIssueRules = { ...limit, ...(token.issuedAt === undefined ? {} : { tokenIssuedAt: token.issuedAt }) };
      const outcome = await storeCall(() => deps.store.issueTicket({ hash: hashTicket(ticket), slot }, record, ttlMs, rules));
      if (outcome.status === "rate_limited") throw new GatewayError("RATE_LIMITED", { retryAfter: retryAfterSeconds(outcome.resetInMs) });
      if (outcome.status === "token_revoked") throw new GatewayError("TOKEN_REVOKED");
      return { ticket, expiresAt };
    },

    /**
     * Takes the ticket (once, ever), checks what it is bound to and counts the
     * connection under the per-user limit, in one store round trip
     * (store.admit). Rejects with the GatewayError whose close code the socket
     * must end with.
     */
    async redeem(ticket: string | undefined, origin: string | null, connection: ConnectionSlot): Promise<AdmittedTicket> {
      const key = ticketKeyOf(ticket);
      const started = performance.now();
      const outcome = await storeCall(() =>
        deps.store.admit({
          ticket: key,
          origin,
          nowMs: now(),
          connectionId: connection.id,
          maxConnections: connection.max,
          connectionTtlMs: connection.ttlMs,
        }),
      );
      deps.observeRedeem?.((performance.now() - started) / 1000);
      if (outcome.status !== "admitted") throw refusalOf(outcome, ticket!, now());
      return { ...outcome.record, head: outcome.head };
    },
  };
}

/** Where the ticket is kept; throws TICKET_MISSING or TICKET_MALFORMED before any store call. */
function ticketKeyOf(ticket: string | undefined): TicketKey {
  if (ticket === undefined || ticket === "") throw new GatewayError("TICKET_MISSING");
  if (!TICKET_SHAPE.test(ticket)) throw new GatewayError("TICKET_MALFORMED");
  const tagPart = ticket.split(".")[2];
  if (tagPart === undefined) return { hash: hashTicket(ticket), slot: 0 };
  const tag = parseInt(tagPart, 36);
  if (tag >= SLOT_COUNT) throw new GatewayError("TICKET_MALFORMED");
  const mask = slotMask(Buffer.from(ticket.slice(0, 4), "base64url"));
  return { hash: hashTicket(ticket), slot: (tag - mask + SLOT_COUNT) % SLOT_COUNT };
}

/** What a redeem that did not admit tells the client, with the contract's codes and messages. */
function refusalOf(outcome: Exclude<AdmitOutcome, { status: "admitted" }>, ticket: string, at: number): GatewayError {
  switch (outcome.status) {
    case "used":
      return new GatewayError("TICKET_USED");
    case "unknown": {
      const carried = parseInt(ticket.split(".")[1] ?? "0", 36);
      return new GatewayError(carried <= at ? "TICKET_EXPIRED" : "TICKET_INVALID");
    }
    case "refused":
      if (outcome.reason === "ORIGIN_FORBIDDEN") return new GatewayError("ORIGIN_FORBIDDEN", { message: "This ticket was issued to another origin." });
      if (outcome.reason === "SESSION_REVOKED") return new GatewayError("SESSION_REVOKED", { message: "This ticket was voided when the session was revoked." });
      return new GatewayError(outcome.reason);
  }
}

/** The first 14 bits of the ticket's random part: what hides the slot in its tag. */
function slotMask(secret: Buffer): number {
  return ((secret[0]! << 8) | secret[1]!) % SLOT_COUNT;
}

/** Whole seconds until a rate window resets, at least 1 (the Retry-After header). */
export function retryAfterSeconds(resetInMs: number): number {
  return Math.max(1, Math.ceil(resetInMs / 1000));
}

export function hashTicket(ticket: string): string {
  return createHash("sha256").update(ticket).digest("base64url");
}
