/**
 * Production's Redis requires the gateway's ACL user (infra/redisCluster.ts:
 * a Memorystore for Redis Cluster ACL policy), and its password is rotated
 * without downtime the way docs/operations.md#rotate-the-redis-password-redis_password
 * says: first the user accepts the old and the new password (a Redis user
 * holds several), the new revision starts with the new one while the old
 * revision keeps running on the old one, then the old password is revoked.
 * The rules are applied exactly as the program deploys them
 * (`gatewayAclRule`), with ACL SETUSER on a local redis-server whose default
 * user is off, while the stores' connections are open.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatewayAclRule } from "../../service/src/plugins/store/acl.js";
import { createRedisStore, StoreUnavailableError, type BusMessage, type Store } from "../../service/src/plugins/store/index.js";
import { startGateway, requestTicket, mintToken } from "../support/gateway.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { waitFor } from "../support/wait.js";

const LIMITS = { maxEvents: 100, ttlMs: 60_000 };
const USER = "chat-gateway";
const ADMIN = { username: "admin", password: `admin-${randomUUID()}` };
const OLD = `old-${randomUUID().replace(/-/g, "")}`;
const NEW = `new-${randomUUID().replace(/-/g, "")}`;

let server: RedisServerHandle;
let admin: Redis;
const stores: Store[] = [];
const logs: string[] = [];
const logger = { warn: (obj: object, msg: string) => logs.push(JSON.stringify([obj, msg])), info: (obj: object, msg: string) => logs.push(JSON.stringify([obj, msg])) };

/** What Memorystore does when the ACL policy changes: the user's rule is set again. */
async function applyRule(passwords: string[]): Promise<void> {
  await admin.call("ACL", "SETUSER", USER, ...gatewayAclRule(passwords).split(" "));
}

function store(password: string): Store {
  const s = createRedisStore({ url: server.url, username: USER, password, logger, commandTimeoutMs: 500 });
  stores.push(s);
  return s;
}

/** Drops every connection of the gateway's user: a network blip, a Memorystore maintenance event. */
async function dropConnections(): Promise<void> {
  await admin.call("CLIENT", "KILL", "USER", USER);
}

beforeAll(async () => {
  server = await startRedis({
    acl: { users: [`${ADMIN.username} on >${ADMIN.password} ~* &* +@all`, `${USER} ${gatewayAclRule([OLD])}`], admin: ADMIN },
  });
  admin = new Redis(server.url, ADMIN);
});

afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  admin.disconnect();
  await server.stop();
});

describe("Redis ACL authentication", () => {
  it("refuses a client that does not authenticate: the default user is off", async () => {
    const anonymous = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    anonymous.on("error", () => undefined);
    try {
      await anonymous.connect().catch(() => undefined);
      await expect(anonymous.set("k", "v")).rejects.toThrow(/NOAUTH|NOPERM|Connection is closed/);
    } finally {
      anonymous.disconnect();
    }
  });

  it("a wrong password is refused and reported without the password", async () => {
    const wrong = store(`wrong-${randomUUID()}`);
    await expect(wrong.head(`u-${randomUUID()}`)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await wrong.check()).toEqual({ store: false, bus: false });
    expect(logs.join("\n")).not.toMatch(/wrong-|old-|new-|admin-/);
  });

  it("the gateway configured with REDIS_USERNAME and REDIS_PASSWORD authenticates as its ACL user and serves", async () => {
    await applyRule([OLD]);
    const gateway = await startGateway({ env: { REDIS_URL: server.url, REDIS_USERNAME: USER, REDIS_PASSWORD: OLD } });
    try {
      await waitFor(async () => (await fetch(`${gateway.url}/readyz`)).status === 200, 10_000);
      expect((await requestTicket(gateway, await mintToken({ sub: "acl-user" }))).status).toBe(201);
      const clients = String(await admin.call("CLIENT", "LIST"));
      expect(clients).toMatch(new RegExp(`name=gw-cmd .*user=${USER}`));
      expect(gateway.logs.lines.length).toBeGreaterThan(0);
      expect(gateway.logs.text).not.toContain(OLD);
    } finally {
      await gateway.close();
    }
  });

  it("rotates the password while connections are open: old and new accepted together, then the old revoked", async () => {
    const oldRevision = store(OLD);
    await waitFor(async () => (await oldRevision.check()).bus, 10_000);
    const userId = `u-${randomUUID()}`;
    expect((await oldRevision.publishEvent(userId, event(1), LIMITS)).seq).toBe(1);

    // Step 1: the policy accepts both; the new revision starts with the new password.
    await applyRule([NEW, OLD]);
    const newRevision = store(NEW);
    await waitFor(async () => (await newRevision.check()).bus, 10_000);
    const got: BusMessage[] = [];
    oldRevision.onMessage((m) => got.push(m));
    await oldRevision.subscribeUser(userId);
    expect((await newRevision.publishEvent(userId, event(2), LIMITS)).seq).toBe(2);
    await waitFor(() => got.some((m) => m.kind === "event" && m.event.seq === 2), 10_000);

    // A reconnect of the old revision during the overlap still gets in with the old password.
    await dropConnections();
    await waitFor(async () => (await oldRevision.check()).bus && (await newRevision.check()).bus, 10_000);
    expect((await oldRevision.publishEvent(userId, event(3), LIMITS)).seq).toBe(3);

    // Step 2: the old password is revoked. Open connections stay authenticated.
    await applyRule([NEW]);
    expect((await oldRevision.publishEvent(userId, event(4), LIMITS)).seq).toBe(4);
    expect((await newRevision.readHistory(userId, 0, LIMITS)).events.map((e) => e.seq)).toEqual([1, 2, 3, 4]);

    // Why step 2 waits for the old revision to be gone: after a drop only the new password gets back in.
    await dropConnections();
    await waitFor(async () => (await newRevision.check()).bus, 10_000);
    expect((await newRevision.publishEvent(userId, event(5), LIMITS)).seq).toBe(5);
    await expect(oldRevision.head(userId)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(logs.join("\n")).not.toMatch(new RegExp(`${OLD}|${NEW}|${ADMIN.password}`));
  });
});

function event(n: number) {
  return { type: "agent_thinking", event_id: `e${n}`, run_id: "run-1", thread_id: "thread-1", ts: "2026-01-01T00:00:00.000Z", data: { n } } as const;
}

