/**
 * The races of a one-step connect (hub.ts confirm, userChannels.ts) on a real
 * Redis and its real bus: an event or a revoke published after the admission
 * step read the head but before this instance heard the user's channel.
 * (test/unit/admission.test.ts has the same and the overtaking cases on the
 * memory store.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRedisStore } from "../../service/src/plugins/store/redis.js";
import type { Store } from "../../service/src/plugins/store/types.js";
import { agentEvent, DEFAULT_LIMITS } from "../support/events.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";
import { sleep, waitFor } from "../support/wait.js";


let redis: RedisServerHandle;
let real: Store;
let gw: TestGateway;
/** What runs between the admission step and the subscription, per user. */
const between = new Map<string, (userId: string) => Promise<void>>();

beforeAll(async () => {
  redis = await startRedis();
  real = createRedisStore({ url: redis.url });
  const store: Store = {
    ...real,
    async subscribeUser(userId) {
      await between.get(userId)?.(userId);
      return real.subscribeUser(userId);
    },
  };
  gw = await startGateway({ store });
});
afterAll(async () => {
  await gw?.close();
  await real?.close();
  await redis?.stop();
});

describe("a connect racing the bus (Redis)", () => {
  it("delivers once an event published after the admission step and before the subscription, and the next one live", async () => {
    between.set("redis-between", async (userId) => {
      await real.publishEvent(userId, agentEvent(1), DEFAULT_LIMITS); // no instance hears it on the bus
    });
    const client = await TestClient.connect(gw, await ticketFor(gw, "redis-between"));
    expect(await client.waitForType("connection_established")).toMatchObject({ latest_seq: 0 });
    client.send({ type: "ping" }); // ends the live hold without a resume
    await waitFor(() => client.seqs.length >= 1, 3000, "the event published before the subscription");
    await real.publishEvent("redis-between", agentEvent(2), DEFAULT_LIMITS);
    await waitFor(() => client.seqs.length >= 2, 3000, "the next event");
    await sleep(200);
    expect(client.seqs).toEqual([1, 2]);
    client.close();
  });

  it("ends with 4501 a connection whose user was revoked after the admission step and before the subscription", async () => {
    between.set("redis-revoked", async (userId) => {
      expect(await gw.app.hub.revoke(userId, Date.now(), 60_000)).toBe(0);
    });
    const client = await TestClient.connect(gw, await ticketFor(gw, "redis-revoked"));
    expect(await client.closed).toEqual({ code: 4501, reason: "SESSION_REVOKED" });
  });
});
