/**
 * The Store contract (service/src/plugins/store/types.ts), run against both
 * implementations, the Redis one both on a single Redis and on a Redis
 * Cluster (3 primaries, 3 replicas). Time moves through `h.advance`: the
 * memory store's clock jumps, Redis really waits (so its durations are kept
 * short). A "peer" is a second gateway instance on the same data: a second
 * Redis store on the same server or cluster, or, for the single-instance
 * memory store, the store itself.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createMemoryStore,
  createRedisStore,
  hashSlot,
  keyPatterns,
  redisKeys,
  StoreUnavailableError,
  type AgentEventInput,
  type BusMessage,
  type HistoryLimits,
  type Store,
  type AdmitRequest,
  type TicketKey,
  type TicketRecord,
} from "../../service/src/plugins/store/index.js";
import { admissionTicketKeys, userSlot } from "../../service/src/plugins/store/keys.js";
import { gatewayAclRule } from "../../service/src/plugins/store/acl.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { makeCertificates, startRedisCluster, type RedisClusterHandle } from "../support/redis-cluster.js";
import { runScript } from "../support/process.js";
import { sleep, waitFor } from "../support/wait.js";

const LIMITS: HistoryLimits = { maxEvents: 1000, ttlMs: 900_000 };
/** Issue rules whose per-user limit no test reaches: for tests about what happens to a ticket once issued. */
const UNLIMITED = { perUser: 1_000_000, windowMs: 60_000 };

interface Harness {
  readonly name: "memory" | "redis" | "redis cluster" | "redis, ACL user" | "redis cluster, ACL user";
  readonly store: Store;
  readonly peer: Store;
  /** A new store on the same data (closed by teardown). */
  create(): Store;
  now(): number;
  advance(ms: number): Promise<void>;
  /** The backend loses every key; returns the store to use from then on. */
  loseData(): Promise<Store>;
  /** Redis only: the key's remaining ttl as Redis reports it. */
  pttl?(key: string): Promise<number>;
  /** Redis only: writes a key behind the store's back. */
  rawSet?(key: string, value: string): Promise<unknown>;
  teardown(): Promise<void>;
}

async function memoryHarness(): Promise<Harness> {
  let clock = Date.UTC(2026, 0, 1);
  const now = () => clock;
  const stores: Store[] = [];
  const create = () => {
    const store = createMemoryStore({ now });
    stores.push(store);
    return store;
  };
  const store = create();
  return {
    name: "memory",
    store,
    peer: store,
    create,
    now,
    async advance(ms) {
      clock += ms;
    },
    async loseData() {
      return create(); // a restarted dev server
    },
    async teardown() {
      await Promise.all(stores.map((s) => s.close()));
    },
  };
}

/**
 * Production's Redis authenticates an ACL user (infra/redisCluster.ts): here
 * the default user is off, and the stores log in as `chat-gateway` with
 * exactly the permissions the program deploys (service/src/plugins/store/acl.ts).
 */
const ACL_ADMIN = { username: "admin", password: `admin-${randomUUID()}` };
const ACL_GATEWAY = { username: "chat-gateway", password: `gw-${randomUUID()}` };

async function redisHarness(acl = false): Promise<Harness> {
  const server = await startRedis(acl ? { acl: aclUsers() } : {});
  const raw = new Redis(server.url, acl ? ACL_ADMIN : {});
  const stores: Store[] = [];
  const create = () => {
    const store = createRedisStore({ url: server.url, ...(acl ? ACL_GATEWAY : {}) });
    stores.push(store);
    return store;
  };
  const store = create();
  const peer = create();
  return {
    name: acl ? "redis, ACL user" : "redis",
    store,
    peer,
    create,
    now: Date.now,
    advance: sleep,
    async loseData() {
      await raw.flushall();
      return store;
    },
    pttl: (key) => raw.pttl(key),
    rawSet: (key, value) => raw.set(key, value),
    async teardown() {
      await Promise.all(stores.map((s) => s.close()));
      raw.disconnect();
      await server.stop();
    },
  };
}

/** The users of an ACL-authenticated server or cluster: an admin for the harness, and the gateway's. */
function aclUsers() {
  return {
    users: [`${ACL_ADMIN.username} on >${ACL_ADMIN.password} ~* &* +@all`, `${ACL_GATEWAY.username} ${gatewayAclRule([ACL_GATEWAY.password])}`],
    admin: ACL_ADMIN,
  };
}

async function clusterHarness(acl = false): Promise<Harness> {
  const cluster = await startRedisCluster({ replicas: 1, ...(acl ? { acl: aclUsers() } : {}) });
  const nodes = clusterNodes(cluster);
  const raw = new Cluster(nodes, acl ? { redisOptions: ACL_ADMIN } : {});
  const stores: Store[] = [];
  const create = () => {
    const store = createRedisStore({ cluster: { nodes }, ...(acl ? ACL_GATEWAY : {}) });
    stores.push(store);
    return store;
  };
  const store = create();
  const peer = create();
  await waitFor(async () => (await store.check()).bus && (await peer.check()).bus, 10_000);
  return {
    name: acl ? "redis cluster, ACL user" : "redis cluster",
    store,
    peer,
    create,
    now: Date.now,
    advance: sleep,
    async loseData() {
      await Promise.all(raw.nodes("master").map((node) => node.flushall()));
      return store;
    },
    pttl: (key) => raw.pttl(key),
    rawSet: (key, value) => raw.set(key, value),
    async teardown() {
      await Promise.all(stores.map((s) => s.close()));
      raw.disconnect();
      await cluster.stop();
    },
  };
}

describe.each([
  { name: "memory", setup: memoryHarness },
  { name: "redis", setup: () => redisHarness() },
  { name: "redis, ACL user", setup: () => redisHarness(true) },
  { name: "redis cluster", setup: () => clusterHarness() },
  { name: "redis cluster, ACL user", setup: () => clusterHarness(true) },
])("$name store", ({ setup }) => {
  let h: Harness;
  beforeAll(async () => {
    h = await setup();
  });
  afterAll(() => h.teardown());

  describe("tickets (written by issueTicket, taken by admit)", () => {
    /** A ticket of `rec` issued in its user's slot, under a limit no test reaches. */
    async function issue(rec: TicketRecord, ttlMs: number): Promise<TicketKey> {
      const ticket = { hash: uid("ticket"), slot: userSlot(rec.sub) };
      expect(await h.store.issueTicket(ticket, rec, ttlMs, UNLIMITED)).toEqual({ status: "issued" });
      return ticket;
    }
    /** Takes a ticket the way a connect does: admit, with the record's origin. */
    const take = (store: Store, ticket: TicketKey, rec: TicketRecord) =>
      store.admit({ ticket, origin: rec.origin, nowMs: h.now(), connectionId: uid("conn"), maxConnections: 1000, connectionTtlMs: 60_000 });

    it("takes a ticket once, handing back its record as issued, then reports it used on every instance", async () => {
      const rec = record(h.now(), 30_000);
      const ticket = await issue(rec, 30_000);
      expect(await take(h.peer, ticket, rec)).toMatchObject({ status: "admitted", record: rec });
      expect(await take(h.store, ticket, rec)).toEqual({ status: "used" });
      expect(await take(h.peer, ticket, rec)).toEqual({ status: "used" });
    });

    it("reports a ticket that was never issued as unknown, not used", async () => {
      const rec = record(h.now(), 30_000);
      expect(await take(h.store, { hash: uid("never"), slot: userSlot(rec.sub) }, rec)).toEqual({ status: "unknown" });
    });

    it("keeps a ticket 60 s past its ttl, so an expired one is refused as TICKET_EXPIRED, not unknown", async () => {
      const rec = record(h.now(), 100);
      const ticket = await issue(rec, 100);
      await h.advance(300);
      expect(await take(h.store, ticket, rec)).toEqual({ status: "refused", reason: "TICKET_EXPIRED" });

      if (h.pttl) {
        // Redis keeps time itself: read the expiry rather than wait a minute.
        const later = await issue(record(h.now(), 100), 100);
        const left = await h.pttl(admissionTicketKeys(later.slot, later.hash)[0]);
        expect(left).toBeGreaterThan(60_100 - 1_000);
        expect(left).toBeLessThanOrEqual(60_100);
      } else {
        const [inRec, outRec] = [record(h.now(), 100), record(h.now(), 100)];
        const [justIn, justOut] = [await issue(inRec, 100), await issue(outRec, 100)];
        await h.advance(60_099);
        expect(await take(h.store, justIn, inRec)).toEqual({ status: "refused", reason: "TICKET_EXPIRED" });
        await h.advance(2);
        expect(await take(h.store, justOut, outRec)).toEqual({ status: "unknown" });
      }
    });

    it("reports a taken ticket as used for 10 minutes, then as unknown", async () => {
      const rec = record(h.now(), 30_000);
      const ticket = await issue(rec, 30_000);
      expect((await take(h.store, ticket, rec)).status).toBe("admitted");
      if (h.pttl) {
        const left = await h.pttl(admissionTicketKeys(ticket.slot, ticket.hash)[1]);
        expect(left).toBeGreaterThan(600_000 - 1_000);
        expect(left).toBeLessThanOrEqual(600_000);
      } else {
        await h.advance(599_000);
        expect((await take(h.store, ticket, rec)).status).toBe("used");
        await h.advance(1_001);
        expect((await take(h.store, ticket, rec)).status).toBe("unknown");
      }
    });
  });

  describe("admission (one step: take the ticket, check it, count the connection, read the head)", () => {
    const ORIGIN = "https://chat.example.com";
    /** An admission ticket of `rec` issued in its user's slot, and the request that redeems it. */
    async function putAdmission(rec: TicketRecord, ttlMs = 30_000) {
      const ticket = { hash: uid("ticket"), slot: userSlot(rec.sub) };
      expect(await h.store.issueTicket(ticket, rec, ttlMs, UNLIMITED)).toEqual({ status: "issued" });
      return (over: Partial<AdmitRequest> = {}): AdmitRequest => ({
        ticket,
        origin: ORIGIN,
        nowMs: h.now(),
        connectionId: uid("conn"),
        maxConnections: 10,
        connectionTtlMs: 60_000,
        ...over,
      });
    }

    it("admits a ticket once among 200 concurrent redeemers on two instances, with the record as put and the head after it", async () => {
      const rec = record(h.now(), 30_000);
      await h.store.publishEvents(rec.sub, [event(1), event(2)], LIMITS);
      const request = await putAdmission(rec);
      const outcomes = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? h.store : h.peer).admit(request())));
      const admitted = outcomes.filter((o) => o.status === "admitted");
      expect(admitted).toEqual([{ status: "admitted", record: rec, head: await h.store.head(rec.sub) }]);
      expect(admitted[0]?.status === "admitted" && admitted[0].head.latestSeq).toBe(2);
      expect(outcomes.filter((o) => o.status === "used")).toHaveLength(199);
    });

    it("finds nothing under another slot or hash: unknown, and the ticket stays redeemable", async () => {
      const rec = record(h.now(), 30_000);
      const request = await putAdmission(rec);
      const right = request();
      expect(await h.store.admit({ ...right, ticket: { ...right.ticket, slot: (right.ticket.slot + 1) % 16384 } })).toEqual({ status: "unknown" });
      expect(await h.store.admit({ ...right, ticket: { ...right.ticket, hash: uid("ticket") } })).toEqual({ status: "unknown" });
      expect((await h.peer.admit(right)).status).toBe("admitted");
    });

    it("refuses, in the rule's order, an expired ticket, another origin, a revoked session and an ended one, spending the ticket each time", async () => {
      const at = h.now();
      const cases: Array<[string, TicketRecord, Partial<AdmitRequest>]> = [
        ["TICKET_EXPIRED", { ...record(at, 30_000), expiresAt: at, sessionExpiresAt: at }, { origin: "https://other.example" }],
        ["ORIGIN_FORBIDDEN", { ...record(at, 30_000), sessionExpiresAt: at }, { origin: "https://other.example" }],
        ["ORIGIN_FORBIDDEN", record(at, 30_000), { origin: null }],
        ["SESSION_EXPIRED", { ...record(at, 30_000), sessionExpiresAt: at }, {}],
      ];
      for (const [reason, rec, over] of cases) {
        const request = await putAdmission(rec);
        const first = request({ nowMs: at, ...over });
        expect(await h.store.admit(first)).toEqual({ status: "refused", reason });
        expect(await h.peer.admit({ ...first, origin: ORIGIN })).toEqual({ status: "used" });
      }
      const unbound = { ...record(at, 30_000), origin: null };
      expect((await h.store.admit((await putAdmission(unbound))({ origin: null }))).status).toBe("admitted");
      expect((await h.store.admit((await putAdmission(unbound))({ origin: ORIGIN }))).status).toBe("admitted");
    });

    it("refuses a ticket issued at or before its user's revocation, on every instance, and admits one issued after", async () => {
      const rec = record(h.now(), 30_000);
      const before = await putAdmission(rec);
      const also = await putAdmission(rec);
      await h.store.revokeUser(rec.sub, rec.issuedAt, 300_000);
      expect(await h.store.admit(before())).toEqual({ status: "refused", reason: "SESSION_REVOKED" });
      expect(await h.peer.admit(also())).toEqual({ status: "refused", reason: "SESSION_REVOKED" });
      const after = await putAdmission({ ...rec, issuedAt: rec.issuedAt + 1 });
      expect((await h.peer.admit(after())).status).toBe("admitted");
    });

    it("counts admitted connections with addConnection's: at most max across instances, a removed one frees its place", async () => {
      const rec = record(h.now(), 30_000);
      expect(await h.store.addConnection(rec.sub, "elsewhere", 3, 60_000)).toBe(true);
      const admit = async (store: Store, connectionId: string) => (await store.admit((await putAdmission(rec))({ connectionId, maxConnections: 3 }))).status;
      expect(await admit(h.store, "c1")).toBe("admitted");
      expect(await admit(h.peer, "c2")).toBe("admitted");
      expect(await h.store.admit((await putAdmission(rec))({ maxConnections: 3 }))).toEqual({ status: "refused", reason: "TOO_MANY_CONNECTIONS" });
      expect(await h.peer.addConnection(rec.sub, "another", 3, 60_000)).toBe(false);
      await h.peer.removeConnection(rec.sub, "c1");
      expect(await admit(h.store, "c3")).toBe("admitted");
    });

    it("reads a user's head and revocation together (userState)", async () => {
      const user = uid("state");
      expect(await h.store.userState(user)).toEqual({ head: await h.store.head(user), revokedAt: 0 });
      await h.store.publishEvent(user, event(1), LIMITS);
      await h.store.revokeUser(user, 1234, 300_000);
      expect(await h.peer.userState(user)).toEqual({ head: { latestSeq: 1, epoch: (await h.store.head(user)).epoch }, revokedAt: 1234 });
    });
  });

  describe("issuing tickets", () => {
    const rules = (perUser: number, windowMs = 400, tokenIssuedAt?: number) => ({ perUser, windowMs, ...(tokenIssuedAt === undefined ? {} : { tokenIssuedAt }) });
    /** Where a ticket of `rec`'s user is kept: a fresh hash in the user's slot, as the ticket service makes it. */
    const keyOf = (rec: TicketRecord): TicketKey => ({ hash: uid("issue"), slot: userSlot(rec.sub) });
    /** Takes an issued ticket the way a connect does: admit, with the record's origin. */
    const take = (store: Store, ticket: TicketKey, rec: TicketRecord) =>
      store.admit({ ticket, origin: rec.origin, nowMs: h.now(), connectionId: uid("conn"), maxConnections: 1000, connectionTtlMs: 60_000 });

    it("stores the ticket where admit takes it, counting the user's tickets in a window shared by instances", async () => {
      const rec = record(h.now(), 30_000);
      const other = { ...record(h.now(), 30_000) };
      const keys = [keyOf(rec), keyOf(rec), keyOf(rec), keyOf(rec)];
      expect(await h.store.issueTicket(keys[0]!, rec, 30_000, rules(3))).toEqual({ status: "issued" });
      expect(await h.peer.issueTicket(keys[1]!, rec, 30_000, rules(3))).toEqual({ status: "issued" });
      expect(await h.store.issueTicket(keys[2]!, rec, 30_000, rules(3))).toEqual({ status: "issued" });
      const refused = await h.peer.issueTicket(keys[3]!, rec, 30_000, rules(3));
      expect(refused.status).toBe("rate_limited");
      expect(refused.status === "rate_limited" && refused.resetInMs).toBeGreaterThan(0);
      expect(refused.status === "rate_limited" && refused.resetInMs).toBeLessThanOrEqual(400);
      // Another user has a counter of their own.
      expect(await h.store.issueTicket(keyOf(other), other, 30_000, rules(3))).toEqual({ status: "issued" });
      // Issued tickets are admitted once, with their record; the refused one was never written.
      for (const key of keys.slice(0, 3)) expect(await take(h.peer, key, rec)).toMatchObject({ status: "admitted", record: rec });
      expect(await take(h.store, keys[3]!, rec)).toEqual({ status: "unknown" });
      await h.advance(450);
      expect(await h.store.issueTicket(keyOf(rec), rec, 30_000, rules(3))).toEqual({ status: "issued" });
    });

    it("refuses a token issued before the user's not_before, or without iat while one is in force, writing nothing", async () => {
      const rec = record(h.now(), 30_000);
      const free = keyOf(rec);
      expect(await h.store.issueTicket(free, rec, 30_000, rules(10, 60_000))).toEqual({ status: "issued" }); // no marker, no iat
      await h.peer.revokeTokensBefore(rec.sub, 5_000_000, 60_000);
      const [before, missing, at, after] = [keyOf(rec), keyOf(rec), keyOf(rec), keyOf(rec)];
      expect(await h.store.issueTicket(before, rec, 30_000, rules(10, 60_000, 4_999_999))).toEqual({ status: "token_revoked" });
      expect(await h.store.issueTicket(missing, rec, 30_000, rules(10, 60_000))).toEqual({ status: "token_revoked" });
      expect(await h.store.issueTicket(at, rec, 30_000, rules(10, 60_000, 5_000_000))).toEqual({ status: "issued" });
      expect(await h.store.issueTicket(after, rec, 30_000, rules(10, 60_000, 6_000_000))).toEqual({ status: "issued" });
      for (const key of [before, missing]) expect(await take(h.store, key, rec)).toEqual({ status: "unknown" });
      for (const key of [free, at, after]) expect((await take(h.store, key, rec)).status).toBe("admitted");
      // The refused requests counted: 5 of 10 are gone, and the limit comes before the marker.
      for (let i = 0; i < 5; i++) expect((await h.store.issueTicket(keyOf(rec), rec, 30_000, rules(10, 60_000, 6_000_000))).status).toBe("issued");
      expect((await h.store.issueTicket(keyOf(rec), rec, 30_000, rules(10, 60_000, 4_000_000))).status).toBe("rate_limited");
    });

    it("holds the per-user limit when 40 requests race on two instances", async () => {
      const rec = record(h.now(), 30_000);
      const keys = Array.from({ length: 40 }, () => keyOf(rec));
      const outcomes = await Promise.all(keys.map((key, i) => (i % 2 ? h.store : h.peer).issueTicket(key, rec, 30_000, rules(7, 60_000))));
      expect(outcomes.filter((o) => o.status === "issued")).toHaveLength(7);
      expect(outcomes.filter((o) => o.status === "rate_limited")).toHaveLength(33);
      const taken = await Promise.all(keys.map((key) => take(h.store, key, rec)));
      expect(taken.filter((r) => r.status === "admitted")).toHaveLength(7);
    });

    it("issues for many users at once, beside rate-limit hits (sent in the same auto-pipeline on a cluster)", async () => {
      const calls = Array.from({ length: 50 }, () => {
        const rec = record(h.now(), 30_000);
        return Promise.all([h.store.issueTicket(keyOf(rec), rec, 30_000, rules(10, 60_000)), h.store.hit(uid("ip"), 60_000)]);
      });
      for (const [issued, hit] of await Promise.all(calls)) {
        expect(issued).toEqual({ status: "issued" });
        expect(hit.count).toBe(1);
      }
    });

    it("a not_before marker that is not a number refuses every token (fail closed)", async (context) => {
      if (!h.rawSet) return context.skip(); // only Redis can hold a marker the store did not write
      for (const garbage of ["garbage", "nan", "inf", "-inf"]) {
        const rec = record(h.now(), 30_000);
        await h.rawSet(redisKeys.tokensNotBefore(rec.sub), garbage);
        expect(await h.store.tokensNotBefore(rec.sub)).toBe(Number.MAX_SAFE_INTEGER);
        expect(await h.store.issueTicket(keyOf(rec), rec, 30_000, rules(10, 60_000, Date.now()))).toEqual({ status: "token_revoked" });
      }
    });
  });

  describe("rate limits", () => {
    it("counts hits in a fixed window shared by instances, and starts over when it ends", async () => {
      const key = uid("rl");
      const first = await h.store.hit(key, 400);
      expect(first.count).toBe(1);
      expect(first.resetInMs).toBeGreaterThan(300);
      expect(first.resetInMs).toBeLessThanOrEqual(400);
      expect((await h.peer.hit(key, 400)).count).toBe(2);
      expect((await h.store.hit(uid("other"), 400)).count).toBe(1);
      const third = await h.store.hit(key, 400);
      expect(third.count).toBe(3);
      expect(third.resetInMs).toBeLessThanOrEqual(first.resetInMs);
      await h.advance(450);
      const fresh = await h.store.hit(key, 400);
      expect(fresh.count).toBe(1);
      expect(fresh.resetInMs).toBeGreaterThan(300);
    });

    it("counts several hits at once (addHits) in the same window as hit", async () => {
      const key = uid("rl");
      expect((await h.store.addHits(key, 3, 400)).count).toBe(3);
      expect((await h.peer.hit(key, 400)).count).toBe(4);
      const more = await h.peer.addHits(key, 5, 400);
      expect(more.count).toBe(9);
      expect(more.resetInMs).toBeLessThanOrEqual(400);
      await h.advance(450);
      expect((await h.store.addHits(key, 2, 400)).count).toBe(2);
    });
  });

  describe("users", () => {
    it("reads 0 for a user never revoked, and the latest revocation otherwise", async () => {
      const userId = uid("user");
      expect(await h.store.revokedAt(userId)).toBe(0);
      await h.store.revokeUser(userId, 1_000_000, 60_000);
      expect(await h.peer.revokedAt(userId)).toBe(1_000_000);
      await h.peer.revokeUser(userId, 500_000, 60_000); // late and older: does not undo the newer one
      expect(await h.store.revokedAt(userId)).toBe(1_000_000);
      await h.store.revokeUser(userId, 2_000_000, 60_000);
      expect(await h.store.revokedAt(userId)).toBe(2_000_000);
    });

    it("refuses tokens issued before the latest not_before, on every instance, and forgets it after keepMs", async () => {
      const userId = uid("user");
      expect(await h.store.tokensNotBefore(userId)).toBe(0);
      await h.store.revokeTokensBefore(userId, 5_000_000, 60_000);
      expect(await h.peer.tokensNotBefore(userId)).toBe(5_000_000);
      await h.peer.revokeTokensBefore(userId, 4_000_000, 60_000); // late and older: does not undo the newer one
      expect(await h.store.tokensNotBefore(userId)).toBe(5_000_000);
      // Kept apart from the session revocation: one does not move the other.
      expect(await h.store.revokedAt(userId)).toBe(0);
      await h.store.revokeTokensBefore(userId, 6_000_000, 200);
      await h.advance(300);
      expect(await h.store.tokensNotBefore(userId)).toBe(0);
    });

    it("forgets a revocation after keepMs", async () => {
      const userId = uid("user");
      await h.store.revokeUser(userId, 1_000, 200);
      await h.advance(300);
      expect(await h.store.revokedAt(userId)).toBe(0);
    });

    it("admits at most max live connections of a user across instances; re-adding one is a refresh", async () => {
      const userId = uid("user");
      expect(await h.store.addConnection(userId, "c1", 3, 60_000)).toBe(true);
      expect(await h.peer.addConnection(userId, "c2", 3, 60_000)).toBe(true);
      expect(await h.store.addConnection(userId, "c3", 3, 60_000)).toBe(true);
      expect(await h.peer.addConnection(userId, "c4", 3, 60_000)).toBe(false);
      expect(await h.peer.addConnection(userId, "c1", 3, 60_000)).toBe(true);
      expect(await h.store.addConnection(uid("other"), "c4", 3, 60_000)).toBe(true);
      await h.peer.removeConnection(userId, "c2");
      expect(await h.peer.addConnection(userId, "c4", 3, 60_000)).toBe(true);
      expect(await h.store.addConnection(userId, "c5", 3, 60_000)).toBe(false);
    });

    it("counts connections concurrently added on two instances exactly up to max", async () => {
      const userId = uid("user");
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? h.store : h.peer).addConnection(userId, `c${i}`, 7, 60_000)),
      );
      expect(results.filter(Boolean)).toHaveLength(7);
    });

    it("stops counting a connection that is not refreshed within its ttl", async () => {
      const userId = uid("user");
      const otherUser = uid("user");
      expect(await h.store.addConnection(userId, "a", 2, 500)).toBe(true);
      expect(await h.store.addConnection(userId, "b", 2, 500)).toBe(true);
      expect(await h.store.addConnection(otherUser, "x", 1, 500)).toBe(true);
      await h.advance(300);
      await h.peer.refreshConnections(
        [
          { userId, connectionId: "a" },
          { userId: otherUser, connectionId: "x" },
        ],
        500,
      );
      await h.advance(300); // "b" is 600 ms old: gone; "a" and "x" were refreshed 300 ms ago
      expect(await h.store.addConnection(userId, "c", 2, 500)).toBe(true);
      expect(await h.store.addConnection(userId, "d", 2, 500)).toBe(false);
      expect(await h.store.addConnection(otherUser, "y", 1, 500)).toBe(false);
    });

    it("claims a (user, message) once: pending until started, started after, forgotten after its ttl", async () => {
      const userId = uid("user");
      const opts = { ttlMs: 300, staleMs: 10_000 };
      expect(await h.store.claimMessage(userId, "m1", opts)).toBe("claimed");
      expect(await h.store.claimMessage(userId, "m1", opts)).toBe("pending");
      expect(await h.peer.claimMessage(userId, "m1", opts)).toBe("pending");
      await h.peer.markMessageStarted(userId, "m1", { ttlMs: 300, maxPerUser: 100 });
      expect(await h.store.claimMessage(userId, "m1", opts)).toBe("started");
      expect(await h.peer.claimMessage(userId, "m2", opts)).toBe("claimed");
      expect(await h.peer.claimMessage(uid("user"), "m1", opts)).toBe("claimed");
      await h.advance(400);
      expect(await h.store.claimMessage(userId, "m1", opts)).toBe("claimed");
    });

    it("lets a claim whose run never started be taken over after staleMs, once", async () => {
      const userId = uid("user");
      const opts = { ttlMs: 60_000, staleMs: 200 };
      expect(await h.store.claimMessage(userId, "m1", opts)).toBe("claimed");
      expect(await h.peer.claimMessage(userId, "m1", opts)).toBe("pending");
      await h.advance(300);
      const takeovers = await Promise.all([h.store.claimMessage(userId, "m1", opts), h.peer.claimMessage(userId, "m1", opts)]);
      expect(takeovers.sort()).toEqual(["claimed", "pending"]);
    });

    it("lets a released claim be claimed again at once, but never an accepted id", async () => {
      const userId = uid("user");
      const opts = { ttlMs: 60_000, staleMs: 60_000 };
      expect(await h.store.claimMessage(userId, "m1", opts)).toBe("claimed");
      await h.peer.releaseMessage(userId, "m1");
      expect(await h.peer.claimMessage(userId, "m1", opts)).toBe("claimed");
      await h.store.markMessageStarted(userId, "m1", { ttlMs: 60_000, maxPerUser: 100 });
      await h.store.releaseMessage(userId, "m1");
      expect(await h.peer.claimMessage(userId, "m1", opts)).toBe("started");
    });

    it("keeps at most maxPerUser accepted ids per user, forgetting the oldest first (a flood of messages holds bounded memory)", async () => {
      const userId = uid("user");
      const other = uid("user");
      const opts = { ttlMs: 60_000, staleMs: 60_000 };
      const accept = { ttlMs: 60_000, maxPerUser: 20 };
      await h.store.markMessageStarted(other, "keep", accept);
      for (let i = 0; i < 50; i++) {
        expect(await h.store.claimMessage(userId, `m${i}`, opts)).toBe("claimed");
        await (i % 2 ? h.peer : h.store).markMessageStarted(userId, `m${i}`, accept);
      }
      const outcomes = await Promise.all(Array.from({ length: 50 }, (_, i) => h.peer.claimMessage(userId, `m${i}`, opts)));
      expect(outcomes.slice(30)).toEqual(Array(20).fill("started"));
      expect(outcomes.slice(0, 30)).toEqual(Array(30).fill("claimed"));
      expect(await h.store.claimMessage(other, "keep", opts)).toBe("started");
    });
  });

  describe("events and history", () => {
    it("numbers a user's events 1..N without holes under 500 concurrent publishes from two instances", async () => {
      const userId = uid("user");
      const results = await Promise.all(
        Array.from({ length: 500 }, (_, i) => (i % 2 ? h.store : h.peer).publishEvent(userId, event(i), LIMITS)),
      );
      expect(results.map((r) => r.seq).sort((a, b) => a - b)).toEqual(range(1, 500));
      expect(new Set(results.map((r) => r.epoch)).size).toBe(1);
      expect(await h.peer.head(userId)).toEqual({ latestSeq: 500, epoch: results[0]?.epoch });
      const read = await h.store.readHistory(userId, 0, LIMITS);
      expect(read.complete).toBe(true);
      expect(read.events.map((e) => e.seq)).toEqual(range(1, 500));
    });

    it("publishes a batch of one user's events with contiguous seqs in order, interleaved safely with single publishes from two instances", async () => {
      const userId = uid("user");
      const batch = (from: number) => Array.from({ length: 50 }, (_, i) => event(from + i));
      const results = await Promise.all([
        h.store.publishEvents(userId, batch(0), LIMITS),
        ...Array.from({ length: 20 }, (_, i) => h.peer.publishEvent(userId, event(1000 + i), LIMITS)),
        h.peer.publishEvents(userId, batch(100), LIMITS),
      ]);
      const [first, ...rest] = results as Array<{ firstSeq?: number; seq?: number; epoch: string }>;
      const last = rest.pop()!;
      const singles = rest.map((r) => r.seq!);
      const taken = [...range(first!.firstSeq!, first!.firstSeq! + 49), ...range(last.firstSeq!, last.firstSeq! + 49), ...singles];
      expect(taken.sort((a, b) => a - b)).toEqual(range(1, 120));
      const read = await h.store.readHistory(userId, 0, LIMITS);
      expect(read.complete).toBe(true);
      const ids = read.events.map((e) => (JSON.parse(e.body) as AgentEventInput).event_id);
      // Each batch's events sit at their seqs, in the order given.
      expect(ids.slice(first!.firstSeq! - 1, first!.firstSeq! + 49)).toEqual(batch(0).map((e) => e.event_id));
      expect(ids.slice(last.firstSeq! - 1, last.firstSeq! + 49)).toEqual(batch(100).map((e) => e.event_id));
    });

    it("trims a batch's history exactly to maxEvents and delivers its events on the bus in seq order", async () => {
      const userId = uid("user");
      const got = collect(h.peer);
      await h.peer.subscribeUser(userId);
      const limits = { maxEvents: 5, ttlMs: 900_000 };
      const { firstSeq, epoch } = await h.store.publishEvents(userId, range(1, 12).map(event), limits);
      expect(firstSeq).toBe(1);
      const read = await h.store.readHistory(userId, 7, limits);
      expect(read).toMatchObject({ latestSeq: 12, epoch, complete: true });
      expect(read.events.map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
      await waitFor(() => eventsOf(got, userId).length >= 12);
      expect(eventsOf(got, userId).map((m) => m.event.seq)).toEqual(range(1, 12));
      expect(eventsOf(got, userId).map((m) => (JSON.parse(m.event.body) as AgentEventInput).event_id)).toEqual(range(1, 12).map((n) => `e${n}`));
      await h.peer.unsubscribeUser(userId);
    });

    it("keeps a separate counter per user, whatever characters the user id holds", async () => {
      const tag = randomUUID();
      const ids = [`a:${tag}`, `{a}${tag}`, `a}${tag}`, `%7Ba%7D${tag}`, `a%3A${tag}`, `ü \u{1F600}${tag}`, `\uD800${tag}`, `a${tag}`];
      for (const userId of ids) expect((await h.store.publishEvent(userId, event(1), LIMITS)).seq).toBe(1);
      for (const userId of ids) expect((await h.peer.head(userId)).latestSeq).toBe(1);
    });

    it("stores the event as JSON of the input, so the frame is built without re-serialising", async () => {
      const userId = uid("user");
      const input = event(7);
      const { seq } = await h.store.publishEvent(userId, input, LIMITS);
      const [stored] = (await h.store.readHistory(userId, 0, LIMITS)).events;
      expect(stored).toEqual({ seq, body: JSON.stringify(input) });
    });

    it("holds exactly the last maxEvents events: 8..12 of 12 with a bound of 5", async () => {
      const userId = uid("user");
      const limits = { maxEvents: 5, ttlMs: 900_000 };
      for (let i = 1; i <= 12; i++) await h.store.publishEvent(userId, event(i), limits);
      const read = await h.store.readHistory(userId, 7, limits);
      expect(read).toMatchObject({ latestSeq: 12, complete: true });
      expect(read.events.map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
      expect(read.events.map((e) => (JSON.parse(e.body) as AgentEventInput).event_id)).toEqual(["e8", "e9", "e10", "e11", "e12"]);
      // A gap wider than the bound is incomplete without reading.
      expect(await h.store.readHistory(userId, 6, limits)).toMatchObject({ latestSeq: 12, complete: false, events: [] });
      // With a wider read bound, the trimmed history still says it lacks 1..7.
      const wide = await h.peer.readHistory(userId, 0, LIMITS);
      expect(wide.complete).toBe(false);
      expect(wide.events.map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
    });

    it("drops events older than the history ttl", async () => {
      const userId = uid("user");
      const limits = { maxEvents: 1000, ttlMs: 600 };
      for (let i = 1; i <= 3; i++) await h.store.publishEvent(userId, event(i), limits);
      await h.advance(400);
      for (let i = 4; i <= 5; i++) await h.store.publishEvent(userId, event(i), limits);
      await h.advance(300); // 1..3 are 700 ms old, 4..5 300 ms
      const all = await h.store.readHistory(userId, 0, limits);
      expect(all).toMatchObject({ latestSeq: 5, complete: false });
      expect(all.events.map((e) => e.seq)).toEqual([4, 5]);
      const tail = await h.store.readHistory(userId, 3, limits);
      expect(tail.complete).toBe(true);
      expect(tail.events.map((e) => e.seq)).toEqual([4, 5]);
      await h.advance(400);
      expect(await h.store.readHistory(userId, 3, limits)).toMatchObject({ latestSeq: 5, complete: false, events: [] });
      expect(await h.store.readHistory(userId, 5, limits)).toMatchObject({ latestSeq: 5, complete: true, events: [] });
    });

    it("reads nothing and complete at the latest seq, incomplete beyond it, and 0 for a new user", async () => {
      const userId = uid("user");
      const fresh = await h.store.readHistory(userId, 0, LIMITS);
      expect(fresh).toMatchObject({ latestSeq: 0, complete: true, events: [] });
      expect(await h.store.readHistory(userId, 1, LIMITS)).toMatchObject({ latestSeq: 0, complete: false, events: [] });
      for (let i = 1; i <= 3; i++) await h.store.publishEvent(userId, event(i), LIMITS);
      expect(await h.store.readHistory(userId, 3, LIMITS)).toMatchObject({ latestSeq: 3, complete: true, events: [] });
      expect(await h.store.readHistory(userId, 4, LIMITS)).toMatchObject({ latestSeq: 3, complete: false, events: [] });
      const two = await h.peer.readHistory(userId, 1, LIMITS);
      expect(two.complete).toBe(true);
      expect(two.events.map((e) => e.seq)).toEqual([2, 3]);
    });

    it("keeps one epoch for a user's stream, the one seen even before its first event", async () => {
      const userId = uid("user");
      const before = await h.store.head(userId);
      expect(before.latestSeq).toBe(0);
      expect(before.epoch).toMatch(/^\S+$/);
      const first = await h.peer.publishEvent(userId, event(1), LIMITS);
      const second = await h.store.publishEvent(userId, event(2), LIMITS);
      expect([first.epoch, second.epoch]).toEqual([before.epoch, before.epoch]);
      expect((await h.store.readHistory(userId, 0, LIMITS)).epoch).toBe(before.epoch);
    });

    it("starts a new epoch at seq 1 when the store has lost its data", async () => {
      const userId = uid("user");
      await h.store.publishEvent(userId, event(1), LIMITS);
      const { epoch } = await h.store.publishEvent(userId, event(2), LIMITS);
      const after = await h.loseData();
      const head = await after.head(userId);
      expect(head.latestSeq).toBe(0);
      expect(head.epoch).not.toBe(epoch);
      expect(await after.publishEvent(userId, event(3), LIMITS)).toEqual({ seq: 1, epoch: head.epoch });
    });
  });

  describe("bus", () => {
    it("delivers a user's events to subscribers on two instances in seq order, and no other user's", async () => {
      const userId = uid("user");
      // The same slot, so on a cluster the stranger's messages travel on the very connection that carries the user's.
      const stranger = sameSlot("user", redisKeys.userChannel(userId), redisKeys.userChannel);
      const a = collect(h.store);
      const b = collect(h.peer);
      await h.store.subscribeUser(userId);
      await h.peer.subscribeUser(userId);
      const published = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          Promise.all([
            (i % 2 ? h.store : h.peer).publishEvent(userId, event(i), LIMITS),
            (i % 2 ? h.peer : h.store).publishEvent(stranger, event(i), LIMITS),
          ]),
        ),
      );
      const epoch = published[0]?.[0].epoch;
      for (const got of [a, b]) {
        await waitFor(() => eventsOf(got, userId).length >= 100);
        const mine = eventsOf(got, userId);
        expect(mine.map((m) => m.event.seq)).toEqual(range(1, 100));
        expect(mine.every((m) => m.epoch === epoch)).toBe(true);
        const history = await h.store.readHistory(userId, 0, LIMITS);
        expect(mine.map((m) => m.event.body)).toEqual(history.events.map((e) => e.body));
        expect(eventsOf(got, stranger)).toEqual([]);
      }
      await h.store.unsubscribeUser(userId);
      await h.peer.unsubscribeUser(userId);
    });

    it("keeps a user subscribed until the last of its subscriptions is released", async () => {
      const userId = uid("user");
      // On a cluster only channels of one slot share a subscriber connection, and so an order.
      const sentinel = sameSlot("sentinel", redisKeys.userChannel(userId), redisKeys.userChannel);
      const got = collect(h.store);
      await h.store.subscribeUser(userId);
      await h.store.subscribeUser(userId);
      await h.store.subscribeUser(sentinel);
      await h.store.unsubscribeUser(userId);
      await h.store.publishEvent(userId, event(1), LIMITS);
      await waitFor(() => eventsOf(got, userId).length === 1);
      await h.store.unsubscribeUser(userId);
      await h.store.publishEvent(userId, event(2), LIMITS);
      // Messages on one bus arrive in publish order: once the sentinel is in, event 2 would have been too.
      await h.store.publishEvent(sentinel, event(3), LIMITS);
      await waitFor(() => eventsOf(got, sentinel).length === 1);
      expect(eventsOf(got, userId).map((m) => m.event.seq)).toEqual([1]);
      await h.store.unsubscribeUser(sentinel);
    });

    it("delivers control messages to the user's subscribers, told apart from events, and counts the instances reached", async () => {
      const userId = uid("user");
      const got = collect(h.peer);
      expect(await h.store.publishUserControl(userId, "nobody listens")).toBe(0);
      await h.peer.subscribeUser(userId);
      const payloads = ['{"op":"revoke","req":"r1"}', "42 looks like an event", "", "c c"];
      for (const payload of payloads) expect(await h.store.publishUserControl(userId, payload)).toBe(1);
      await h.store.publishEvent(userId, event(1), LIMITS);
      await waitFor(() => eventsOf(got, userId).length === 1);
      const controls = got.filter((m) => m.kind === "user_control" && m.userId === userId);
      expect(controls).toEqual(payloads.map((payload) => ({ kind: "user_control", userId, payload })));
      await h.peer.unsubscribeUser(userId);
    });

    it("delivers instance messages on that instance's channel only", async () => {
      const me = uid("instance");
      const got = collect(h.store);
      await h.store.subscribeInstance(me);
      await h.peer.publishInstance(sameSlot("instance", redisKeys.instanceChannel(me), redisKeys.instanceChannel), "not for me");
      await h.peer.publishInstance(me, '{"op":"revoke_reply","closed":2}');
      // Both went out on one connection in this order: had the first been delivered, it would be in by now.
      await waitFor(() => got.some((m) => m.kind === "instance_control"));
      expect(got).toEqual([{ kind: "instance_control", payload: '{"op":"revoke_reply","closed":2}' }]);
    });
  });

  describe("lifecycle", () => {
    it("reports the store and the bus healthy", async () => {
      expect(await h.store.check()).toEqual({ store: true, bus: true });
    });

    it("closes idempotently; afterwards calls reject with StoreUnavailableError and check reports both down", async () => {
      const store = h.create();
      await store.head(uid("user"));
      await Promise.all([store.close(), store.close()]);
      await store.close();
      await expect(store.head(uid("user"))).rejects.toBeInstanceOf(StoreUnavailableError);
      const rec = record(h.now(), 1000);
      await expect(store.issueTicket({ hash: uid("t"), slot: userSlot(rec.sub) }, rec, 1000, UNLIMITED)).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(store.subscribeUser(uid("user"))).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(await store.check()).toEqual({ store: false, bus: false });
    });
  });
});

describe("redis store specifics", () => {
  it("puts all of a user's keys (and their tickets') in one hash slot, whatever the id", () => {
    const tagOf = (key: string) => /\{([^}]*)\}/.exec(key)?.[1];
    for (const id of ["plain", "a}b", "{x}", "a:b", "%7D", "\uD800", "a b"]) {
      const userKeys = [
        redisKeys.seq(id),
        redisKeys.history(id),
        redisKeys.connections(id),
        redisKeys.revoked(id),
        redisKeys.messages(id),
        redisKeys.messageClaims(id),
        redisKeys.tokensNotBefore(id),
        redisKeys.ticketRate(id),
        redisKeys.userChannel(id),
      ];
      expect(new Set(userKeys.map(tagOf)).size).toBe(1);
      for (const key of userKeys) expect(key.startsWith("gw:{")).toBe(true);
    }
    // An admission ticket's keys land in its user's slot without naming the user.
    for (const id of ["plain", "a}b", "\uD800"]) {
      const [ticketKey, usedKey] = admissionTicketKeys(userSlot(id), "hash");
      expect([hashSlot(ticketKey), hashSlot(usedKey)]).toEqual([hashSlot(redisKeys.seq(id)), hashSlot(redisKeys.seq(id))]);
      expect(ticketKey).not.toContain(id);
    }
    for (let slot = 0; slot < 16384; slot++) expect(hashSlot(admissionTicketKeys(slot, "h")[0])).toBe(slot);
    // An id that looks like another's escaped form still gets its own keys.
    expect(new Set(["a:b", "a%3Ab", "a%3ab", "a%u003a"].map(redisKeys.seq)).size).toBe(4);
    expect(keyPatterns()).toEqual({
      // <id> is the slot's tag here, <messageId> the ticket's hash.
      admissionTicket: "gw:{<id>}:t:<messageId>",
      admissionTicketUsed: "gw:{<id>}:t:<messageId>:used",
      seq: "gw:{u:<id>}:seq",
      history: "gw:{u:<id>}:hist",
      connections: "gw:{u:<id>}:conns",
      revoked: "gw:{u:<id>}:revoked",
      messages: "gw:{u:<id>}:msgs",
      messageClaims: "gw:{u:<id>}:claims",
      tokensNotBefore: "gw:{u:<id>}:nbf",
      ticketRate: "gw:{u:<id>}:tickets",
      rateLimit: "gw:{rl:<id>}",
      userChannel: "gw:{u:<id>}:ch",
      instanceChannel: "gw:{i:<id>}:ch",
    });
  });

  it("authenticates with the password option over the URL's, and never logs credentials", async () => {
    const server = await startRedis({ args: ["--requirepass", "s3cret-pass"] });
    const logs: string[] = [];
    const logger = { warn: (obj: object, msg: string) => logs.push(JSON.stringify([obj, msg])), info: () => {} };
    const url = `redis://:url-pass@127.0.0.1:${server.port}`;
    const good = createRedisStore({ url, password: "s3cret-pass", logger });
    const bad = createRedisStore({ url, logger, commandTimeoutMs: 300 });
    try {
      await waitFor(async () => (await good.check()).bus);
      expect((await good.hit(uid("rl"), 1000)).count).toBe(1);
      await expect(bad.head(uid("user"))).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(logs.length).toBeGreaterThan(0); // the refused login was reported…
      for (const line of logs) expect(line).not.toMatch(/s3cret-pass|url-pass/); // …without its password
    } finally {
      await Promise.all([good.close(), bad.close()]);
      await server.stop();
    }
  });

  it("speaks TLS to a rediss:// URL, trusting the CA given as tlsCa", async () => {
    const dir = await mkdtemp(join(tmpdir(), "gw-tls-"));
    const files = await makeCertificates(dir);
    const server = await startRedis({ tls: files });
    const trusting = createRedisStore({ url: server.url, tlsCa: await readFile(files.caFile, "utf8") });
    const doubting = createRedisStore({ url: server.url, commandTimeoutMs: 300 });
    try {
      expect(server.url.startsWith("rediss://")).toBe(true);
      await waitFor(async () => (await trusting.check()).bus);
      expect((await trusting.publishEvent(uid("user"), event(1), LIMITS)).seq).toBe(1);
      await expect(doubting.head(uid("user"))).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(await doubting.check()).toEqual({ store: false, bus: false });
    } finally {
      await Promise.all([trusting.close(), doubting.close()]);
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe("faults", () => {
    let server: RedisServerHandle;
    beforeAll(async () => {
      server = await startRedis();
    });
    afterAll(() => server.stop());

    it("rejects every call with StoreUnavailableError within 1.5 s while Redis is down, and recovers without a new store", async () => {
      const warnings: string[] = [];
      const logger = { warn: (obj: object) => warnings.push(JSON.stringify(obj)), info: () => {} };
      const store = createRedisStore({ url: server.url, commandTimeoutMs: 1000, logger });
      const userId = uid("user");
      try {
        await waitFor(async () => (await store.check()).bus);
        await store.subscribeUser(userId);
        const before = await store.publishEvent(userId, event(1), LIMITS);
        await server.kill();

        // At once (commands meet the dying connection), then while it reconnects.
        for (const pause of [0, 300]) {
          await sleep(pause);
          const failures = await timeAll(allCalls(store, userId));
          for (const [name, { error, ms }] of Object.entries(failures)) {
            expect(error, `${name} after ${pause} ms`).toBeInstanceOf(StoreUnavailableError);
            expect(ms, `${name} after ${pause} ms`).toBeLessThan(2500);
          }
        }
        const started = performance.now();
        expect(await store.check()).toEqual({ store: false, bus: false });
        expect(performance.now() - started).toBeLessThan(2500);

        await server.restart();
        await waitFor(async () => (await store.check()).bus, 10_000);
        const successes = await timeAll(allCalls(store, userId));
        for (const [name, { error }] of Object.entries(successes)) expect(error, name).toBeUndefined();
        // `--save ""`: the restart lost the data, so the stream has a new epoch.
        const head = await store.head(userId);
        expect(head.epoch).not.toBe(before.epoch);
        // Several failed reconnects, but the log got one line per connection.
        expect(warnings.filter((w) => w.includes('"connection":"command"'))).toHaveLength(1);
        expect(warnings.filter((w) => w.includes('"connection":"bus"'))).toHaveLength(1);
      } finally {
        await store.close();
      }
    });

    it("times a call out after commandTimeoutMs when Redis hangs, and recovers when it answers again", async () => {
      const store = createRedisStore({ url: server.url, commandTimeoutMs: 500 });
      try {
        await waitFor(async () => (await store.check()).bus, 10_000);
        server.pause();
        const failures = await timeAll({
          issue: () => {
            const rec = record(Date.now(), 1000);
            return store.issueTicket({ hash: uid("t"), slot: userSlot(rec.sub) }, rec, 1000, UNLIMITED);
          },
          publish: () => store.publishEvent(uid("user"), event(1), LIMITS),
          read: () => store.readHistory(uid("user"), 0, LIMITS),
          subscribe: () => store.subscribeUser(uid("user")),
        });
        for (const [name, { error, ms }] of Object.entries(failures)) {
          expect(error, name).toBeInstanceOf(StoreUnavailableError);
          expect(ms, name).toBeGreaterThanOrEqual(450);
          expect(ms, name).toBeLessThan(1500);
        }
        server.resume();
        await waitFor(async () => (await store.check()).bus, 10_000);
        expect((await store.hit(uid("rl"), 1000)).count).toBe(1);
      } finally {
        server.resume();
        await store.close();
      }
    });

    it("reports the bus down and up again across a restart, with its subscriptions restored", async () => {
      const store = createRedisStore({ url: server.url });
      const publisher = createRedisStore({ url: server.url });
      const userId = uid("user");
      const instanceId = uid("instance");
      const statuses: boolean[] = [];
      store.onBusStatus((up) => statuses.push(up));
      try {
        await waitFor(async () => (await store.check()).bus, 10_000);
        expect(statuses).toEqual([]); // the first connect is no transition
        const got = collect(store);
        await store.subscribeUser(userId);
        await store.subscribeInstance(instanceId);

        await server.kill();
        await waitFor(() => statuses.length === 1);
        expect(statuses).toEqual([false]);
        await server.restart();
        await waitFor(() => statuses.length === 2, 10_000);
        expect(statuses).toEqual([false, true]);

        const { seq, epoch } = await publisher.publishEvent(userId, event(1), LIMITS);
        await publisher.publishInstance(instanceId, "after restart");
        await waitFor(() => got.length === 2);
        expect(got).toEqual([
          { kind: "event", userId, epoch, event: { seq, body: JSON.stringify(event(1)) } },
          { kind: "instance_control", payload: "after restart" },
        ]);
        expect(statuses).toEqual([false, true]);
      } finally {
        await Promise.all([store.close(), publisher.close()]);
      }
    });

    it("counts a subscribe that failed, so releasing it does not drop another caller's subscription", async () => {
      const store = createRedisStore({ url: server.url, commandTimeoutMs: 300 });
      const publisher = createRedisStore({ url: server.url });
      const userId = uid("user");
      try {
        await waitFor(async () => (await store.check()).bus, 10_000);
        await server.kill();
        await expect(store.subscribeUser(userId)).rejects.toBeInstanceOf(StoreUnavailableError);
        await server.restart();
        await waitFor(async () => (await store.check()).bus, 10_000);
        await store.subscribeUser(userId);
        await store.unsubscribeUser(userId); // releases the failed one
        const got = collect(store);
        await publisher.publishEvent(userId, event(1), LIMITS);
        await waitFor(() => eventsOf(got, userId).length === 1);
      } finally {
        await Promise.all([store.close(), publisher.close()]);
      }
    });

    it("starts while Redis is down: reports the bus down, then up once Redis arrives, and works from then on", async () => {
      await server.kill();
      const store = createRedisStore({ url: server.url, commandTimeoutMs: 300 });
      const statuses: boolean[] = [];
      store.onBusStatus((up) => statuses.push(up));
      const userId = uid("user");
      try {
        await expect(store.subscribeInstance(uid("instance"))).rejects.toBeInstanceOf(StoreUnavailableError);
        expect(statuses).toEqual([false]);
        await server.restart();
        await waitFor(() => statuses.length === 2, 10_000);
        expect(statuses).toEqual([false, true]);
        const got = collect(store);
        await store.subscribeUser(userId);
        await store.publishEvent(userId, event(1), LIMITS);
        await waitFor(() => eventsOf(got, userId).length === 1);
      } finally {
        await store.close();
      }
    });

    it("leaves no handles after close: a process that used stores, even one whose Redis is down, exits by itself", async () => {
      const dir = await mkdtemp(join(tmpdir(), "gw-store-exit-"));
      const index = resolve("service/src/plugins/store/index.ts");
      const script = join(dir, "exit.mts");
      await writeFile(
        script,
        `import { createMemoryStore, createRedisStore } from ${JSON.stringify(index)};
const [url] = process.argv.slice(2);
const limits = { maxEvents: 10, ttlMs: 60_000 };
const input = { type: "agent_started", event_id: "e", run_id: "r", thread_id: "t", ts: new Date().toISOString(), data: {} } as const;
const redis = createRedisStore({ url });
await redis.subscribeUser("u");
await redis.subscribeInstance("i");
await redis.publishEvent("u", input, limits);
await Promise.all([redis.close(), redis.close()]);
await redis.close();
const down = createRedisStore({ url: "redis://127.0.0.1:1", commandTimeoutMs: 200 });
await down.head("u").catch(() => undefined);
await down.close();
const memory = createMemoryStore();
await memory.subscribeUser("u");
await memory.publishEvent("u", input, limits);
await memory.close();
await memory.close();
console.log("closed");
`,
      );
      try {
        expect(await runScript(script, [server.url])).toEqual({ code: 0, output: "closed" });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});

// ── helpers ──


function allCalls(store: Store, userId: string): Record<string, () => Promise<unknown>> {
  const ticket: TicketKey = { hash: uid("ticket"), slot: userSlot(userId) };
  const rec = { ...record(Date.now(), 30_000), sub: userId };
  return {
    issueTicket: () => store.issueTicket(ticket, rec, 30_000, UNLIMITED),
    admit: () => store.admit({ ticket, origin: rec.origin, nowMs: Date.now(), connectionId: uid("conn"), maxConnections: 5, connectionTtlMs: 1000 }),
    hit: () => store.hit(uid("rl"), 1000),
    revokeUser: () => store.revokeUser(userId, 1, 1000),
    revokedAt: () => store.revokedAt(userId),
    revokeTokensBefore: () => store.revokeTokensBefore(userId, 1, 1000),
    tokensNotBefore: () => store.tokensNotBefore(userId),
    addConnection: () => store.addConnection(userId, "c", 5, 1000),
    removeConnection: () => store.removeConnection(userId, "c"),
    refreshConnections: () => store.refreshConnections([{ userId, connectionId: "c" }], 1000),
    claimMessage: () => store.claimMessage(userId, uid("m"), { ttlMs: 1000, staleMs: 1000 }),
    markMessageStarted: () => store.markMessageStarted(userId, uid("m"), { ttlMs: 1000, maxPerUser: 10 }),
    releaseMessage: () => store.releaseMessage(userId, uid("m")),
    publishEvents: () => store.publishEvents(userId, [event(2), event(3)], LIMITS),
    publishEvent: () => store.publishEvent(userId, event(2), LIMITS),
    head: () => store.head(userId),
    readHistory: () => store.readHistory(userId, 0, LIMITS),
    subscribeUser: () => store.subscribeUser(uid("user")),
    publishUserControl: () => store.publishUserControl(userId, "x"),
    subscribeInstance: () => store.subscribeInstance(uid("instance")),
    publishInstance: () => store.publishInstance(uid("instance"), "x"),
  };
}

async function timeAll(calls: Record<string, () => Promise<unknown>>) {
  const entries = await Promise.all(
    Object.entries(calls).map(async ([name, call]) => {
      const started = performance.now();
      const error = await call().then(
        () => undefined,
        (err: unknown) => err,
      );
      return [name, { error, ms: performance.now() - started }] as const;
    }),
  );
  return Object.fromEntries(entries);
}

function collect(store: Store): BusMessage[] {
  const got: BusMessage[] = [];
  store.onMessage((message) => got.push(message));
  return got;
}

function eventsOf(got: BusMessage[], userId: string) {
  return got.filter((m): m is Extract<BusMessage, { kind: "event" }> => m.kind === "event" && m.userId === userId);
}

function record(now: number, ttlMs: number): TicketRecord {
  return { sub: uid("user"), sessionExpiresAt: now + 3_600_000, origin: "https://chat.example.com", issuedAt: now, expiresAt: now + ttlMs };
}

function event(n: number): AgentEventInput {
  return { type: "agent_thinking", event_id: `e${n}`, run_id: "run-1", thread_id: "thread-1", ts: "2026-01-01T00:00:00.000Z", data: { n } };
}

/** A fresh id whose key (by `keyOf`) is in the slot of `key`: found by trying, as a cluster would hash it. */
function sameSlot(prefix: string, key: string, keyOf: (id: string) => string): string {
  const slot = hashSlot(key);
  const base = uid(prefix);
  for (let i = 0; i < 1_000_000; i++) if (hashSlot(keyOf(`${base}-${i}`)) === slot) return `${base}-${i}`;
  throw new Error("no id found in the slot");
}

function clusterNodes(cluster: RedisClusterHandle) {
  return cluster.startupNodes.split(",").map((address) => ({ host: "127.0.0.1", port: Number(address.split(":")[1]) }));
}

function uid(prefix: string): string {
  return `${prefix}-${randomUUID()}`;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

