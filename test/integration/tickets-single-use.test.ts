import { randomBytes, randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTicketService, hashTicket, type TicketService } from "../../service/src/auth/tickets.js";
import { GatewayError } from "../../service/src/errors.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { ORIGIN, startGateway, ticketFor, type TestGateway } from "../support/gateway.js";

/**
 * docs/protocol.md §2-§3: a ticket is redeemable exactly once, ever, even
 * when many instances race for it, and a redeem that fails says why:
 * TICKET_USED, TICKET_EXPIRED and TICKET_INVALID are told apart, and the
 * origin and revocation bindings hold. Real Redis, two real app instances.
 */

let redis: RedisServerHandle;
let a: TestGateway;
let b: TestGateway;
let raw: Redis;

beforeAll(async () => {
  redis = await startRedis();
  [a, b] = await Promise.all([startGateway({ env: { REDIS_URL: redis.url } }), startGateway({ env: { REDIS_URL: redis.url } })]);
  raw = new Redis(redis.url, { maxRetriesPerRequest: 1 });
});
afterAll(async () => {
  await raw?.quit();
  await Promise.all([a?.close(), b?.close()]);
  await redis?.stop();
});

/** The GatewayError code a redeem rejects with. */
async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return (err as GatewayError).code;
  }
  throw new Error("the ticket was redeemed");
}

/** A well-shaped ticket that was never issued, expiring `inMs` from now. */
function neverIssued(inMs = 30_000): string {
  return `${randomBytes(32).toString("base64url")}.${(Date.now() + inMs).toString(36)}.${randomBytes(1)[0]!.toString(36)}`;
}

/** The connection a redeem counts for its user: a fresh one each time, under a limit no test here reaches. */
const slot = () => ({ id: randomUUID(), max: 1000, ttlMs: 60_000 });

/** A ticket service on the shared store with a clock the test moves. */
function clocked(gw: TestGateway, startMs = Date.now(), ttlSeconds = 30): { tickets: TicketService; clock: { now: number } } {
  const clock = { now: startMs };
  return { tickets: createTicketService({ store: gw.app.store, ttlSeconds, perUserPerMinute: 1000, now: () => clock.now }), clock };
}

const token = (sub: string, expiresInMs = 3_600_000) => ({ sub, expiresAt: Date.now() + expiresInMs });

describe("exactly once", () => {
  it("200 concurrent redeems of one ticket across two instances: exactly one record, every other caller TICKET_USED", async () => {
    const ticket = await ticketFor(a, "racer");
    const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).app.tickets.redeem(ticket, ORIGIN, slot())));
    const won = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<TicketService["redeem"]>>> => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(won[0]?.value).toMatchObject({ sub: "racer", origin: ORIGIN });
    expect(lost).toHaveLength(199);
    for (const r of lost) {
      expect(r.reason).toBeInstanceOf(GatewayError);
      expect((r.reason as GatewayError).code).toBe("TICKET_USED");
    }
  });

  it("many tickets raced at once: each is redeemed exactly once", async () => {
    const tickets = await Promise.all(Array.from({ length: 20 }, (_, i) => ticketFor(i % 2 ? a : b, `many-${i}`)));
    const attempts = tickets.flatMap((ticket) => Array.from({ length: 10 }, (_, j) => ({ ticket, gw: j % 2 ? a : b })));
    const results = await Promise.allSettled(attempts.map(({ ticket, gw }) => gw.app.tickets.redeem(ticket, ORIGIN, slot())));
    for (const ticket of tickets) {
      const mine = results.filter((_, i) => attempts[i]?.ticket === ticket);
      expect(mine.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect(mine.filter((r) => r.status === "rejected" && (r.reason as GatewayError).code === "TICKET_USED")).toHaveLength(9);
    }
  });

  it("a redeemed ticket stays TICKET_USED on every later try, on either instance", async () => {
    const ticket = await ticketFor(a, "reuser");
    expect((await b.app.tickets.redeem(ticket, ORIGIN, slot())).sub).toBe("reuser");
    expect(await refusal(a.app.tickets.redeem(ticket, ORIGIN, slot()))).toBe("TICKET_USED");
    expect(await refusal(b.app.tickets.redeem(ticket, ORIGIN, slot()))).toBe("TICKET_USED");
  });

  it("the record a redeem yields is bound to the token's sub and exp", async () => {
    const { tickets } = clocked(a);
    const expiresAt = Date.now() + 600_000;
    const { ticket } = await tickets.issue({ sub: "binder", expiresAt }, ORIGIN);
    expect(await tickets.redeem(ticket, ORIGIN, slot())).toMatchObject({ sub: "binder", sessionExpiresAt: expiresAt, origin: ORIGIN });
  });
});

describe("expiry (injected clock)", () => {
  it("a ticket is redeemable until its last millisecond", async () => {
    const { tickets, clock } = clocked(a);
    const { ticket, expiresAt } = await tickets.issue(token("punctual"), ORIGIN);
    clock.now = expiresAt - 1;
    expect((await tickets.redeem(ticket, ORIGIN, slot())).sub).toBe("punctual");
  });

  it("a ticket redeemed at or after its expiry is TICKET_EXPIRED", async () => {
    const { tickets, clock } = clocked(a);
    const first = await tickets.issue(token("late"), ORIGIN);
    const second = await tickets.issue(token("late"), ORIGIN);
    clock.now = first.expiresAt;
    expect(await refusal(tickets.redeem(first.ticket, ORIGIN, slot()))).toBe("TICKET_EXPIRED");
    clock.now = second.expiresAt + 3_600_000;
    expect(await refusal(tickets.redeem(second.ticket, ORIGIN, slot()))).toBe("TICKET_EXPIRED");
  });

  it("TICKET_TTL_SECONDS is the ticket's life", async () => {
    const { tickets, clock } = clocked(a, Date.now(), 5);
    const issuedAt = clock.now;
    const { ticket, expiresAt } = await tickets.issue(token("short-lived"), ORIGIN);
    expect(expiresAt - issuedAt).toBe(5000);
    clock.now = issuedAt + 5000;
    expect(await refusal(tickets.redeem(ticket, ORIGIN, slot()))).toBe("TICKET_EXPIRED");
  });

  it("an expired ticket the store has already dropped is still TICKET_EXPIRED, not TICKET_INVALID", async () => {
    const { tickets, clock } = clocked(a);
    const { ticket, expiresAt } = await tickets.issue(token("dropped"), ORIGIN);
    // What the store's own expiry does after the ticket's life and grace period.
    const keys = (await raw.keys("*")).filter((k) => k.includes(hashTicket(ticket)));
    expect(keys).toHaveLength(1);
    await raw.del(...keys);
    clock.now = expiresAt + 120_000;
    expect(await refusal(tickets.redeem(ticket, ORIGIN, slot()))).toBe("TICKET_EXPIRED");
  });

  it("a ticket whose user token expired before the redeem is SESSION_EXPIRED", async () => {
    const { tickets, clock } = clocked(a);
    const sessionEnds = clock.now + 10_000;
    const { ticket } = await tickets.issue({ sub: "token-ran-out", expiresAt: sessionEnds }, ORIGIN);
    clock.now = sessionEnds;
    expect(await refusal(tickets.redeem(ticket, ORIGIN, slot()))).toBe("SESSION_EXPIRED");
  });
});

describe("tickets that were never issued, or are not tickets", () => {
  it("a well-shaped ticket that was never issued is TICKET_INVALID", async () => {
    expect(await refusal(a.app.tickets.redeem(neverIssued(), ORIGIN, slot()))).toBe("TICKET_INVALID");
    expect(await refusal(b.app.tickets.redeem(neverIssued(5000), null, slot()))).toBe("TICKET_INVALID");
  });

  it("an issued ticket with one character changed is TICKET_INVALID", async () => {
    const ticket = await ticketFor(a, "typo");
    const changed = `${ticket[0] === "A" ? "B" : "A"}${ticket.slice(1)}`;
    expect(await refusal(a.app.tickets.redeem(changed, ORIGIN, slot()))).toBe("TICKET_INVALID");
    // The real one is untouched by the failed attempt.
    expect((await a.app.tickets.redeem(ticket, ORIGIN, slot())).sub).toBe("typo");
  });

  it.each([
    ["a word", "hello"],
    ["a JWT", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"],
    ["the random part alone", randomBytes(32).toString("base64url")],
    ["a short random part", `${randomBytes(16).toString("base64url")}.${Date.now().toString(36)}`],
    ["characters outside base64url", `${"+".repeat(43)}.${Date.now().toString(36)}`],
    ["an upper-case expiry", `${randomBytes(32).toString("base64url")}.${Date.now().toString(36).toUpperCase()}`],
    ["a trailing newline", `${randomBytes(32).toString("base64url")}.${Date.now().toString(36)}\n`],
    ["8 KiB", "A".repeat(8192)],
  ])("%s is TICKET_MALFORMED", async (_name, ticket) => {
    expect(await refusal(a.app.tickets.redeem(ticket, ORIGIN, slot()))).toBe("TICKET_MALFORMED");
  });

  it("no ticket at all is TICKET_MISSING", async () => {
    expect(await refusal(a.app.tickets.redeem(undefined, ORIGIN, slot()))).toBe("TICKET_MISSING");
    expect(await refusal(a.app.tickets.redeem("", ORIGIN, slot()))).toBe("TICKET_MISSING");
  });
});

describe("bindings", () => {
  it("a ticket issued to one origin is ORIGIN_FORBIDDEN from another, or from none", async () => {
    const { tickets } = clocked(a);
    const one = await tickets.issue(token("bound"), ORIGIN);
    expect(await refusal(tickets.redeem(one.ticket, "https://other.example.test", slot()))).toBe("ORIGIN_FORBIDDEN");
    const two = await tickets.issue(token("bound"), ORIGIN);
    expect(await refusal(tickets.redeem(two.ticket, null, slot()))).toBe("ORIGIN_FORBIDDEN");
  });

  it("a ticket issued without an origin is redeemable with or without one", async () => {
    const { tickets } = clocked(a);
    const one = await tickets.issue(token("unbound"), null);
    expect((await tickets.redeem(one.ticket, null, slot())).origin).toBeNull();
    const two = await tickets.issue(token("unbound"), null);
    expect((await tickets.redeem(two.ticket, ORIGIN, slot())).sub).toBe("unbound");
  });

  it("a ticket of a user revoked after it was issued is SESSION_REVOKED, on every instance", async () => {
    const { tickets, clock } = clocked(a);
    const one = await tickets.issue(token("revokee"), ORIGIN);
    const two = await tickets.issue(token("revokee"), ORIGIN);
    await a.app.store.revokeUser("revokee", clock.now, 300_000);
    expect(await refusal(a.app.tickets.redeem(one.ticket, ORIGIN, slot()))).toBe("SESSION_REVOKED");
    expect(await refusal(b.app.tickets.redeem(two.ticket, ORIGIN, slot()))).toBe("SESSION_REVOKED");
  });

  it("a revocation voids only that user's tickets, and only those issued before it", async () => {
    const { tickets, clock } = clocked(a);
    const other = await tickets.issue(token("bystander"), ORIGIN);
    await a.app.store.revokeUser("revoked-then-back", clock.now, 300_000);
    clock.now += 1;
    const fresh = await tickets.issue(token("revoked-then-back"), ORIGIN);
    expect((await tickets.redeem(fresh.ticket, ORIGIN, slot())).sub).toBe("revoked-then-back");
    expect((await tickets.redeem(other.ticket, ORIGIN, slot())).sub).toBe("bystander");
  });
});
