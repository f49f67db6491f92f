/**
 * Admission (service/src/realtime/admission.ts, hub.ts): a connect is one
 * store step, the user's channel is subscribed afterwards, and what that
 * ordering could miss is caught: an event or a revoke that lands between the
 * admission step and the subscription, or a bus message that overtakes the
 * admission's reply. Real gateways and sockets on the memory store (no Redis).
 */
import { afterEach, describe, expect, it } from "vitest";
import { createMemoryStore } from "../../service/src/plugins/store/memory.js";
import type { Store } from "../../service/src/plugins/store/types.js";
import { agentEvent, DEFAULT_LIMITS } from "../support/events.js";
import { createAddressBudget } from "../../service/src/realtime/addressBudget.js";
import { startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";
import { sleep, waitFor } from "../support/wait.js";

/** Lets the memory bus (which delivers on a later turn of the event loop) deliver what was published. */
const busTurn = () => new Promise((resolve) => setImmediate(resolve));

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function gatewayOn(store: Store, memory: Store): Promise<TestGateway> {
  const gw = await startGateway({ store });
  cleanups.push(() => memory.close(), () => gw.close());
  return gw;
}

/** Connects, ends the live hold with a ping (not a resume: nothing is replayed on request), and returns the client. */
async function connectLive(gw: TestGateway, user: string): Promise<TestClient> {
  const client = await TestClient.connect(gw, await ticketFor(gw, user));
  await client.waitForType("connection_established");
  client.send({ type: "ping" });
  return client;
}

describe("events around the subscription", () => {
  it("delivers, once each and in order, an event published after the admission step read the head but before the subscription, and one after", async () => {
    const memory = createMemoryStore();
    const store: Store = {
      ...memory,
      async subscribeUser(userId) {
        // The last event for a while, published where the bus has no subscriber for it: no later event shows the gap.
        await memory.publishEvent(userId, agentEvent(1), DEFAULT_LIMITS);
        await busTurn(); // (the memory bus decides who hears a message when it delivers it)
        await memory.subscribeUser(userId);
      },
    };
    const gw = await gatewayOn(store, memory);
    const client = await connectLive(gw, "between");
    expect(client.frames[0]).toMatchObject({ type: "connection_established", latest_seq: 0 });
    await waitFor(() => client.seqs.length >= 1, 3000, "the event published before the subscription");
    await memory.publishEvent("between", agentEvent(2), DEFAULT_LIMITS);
    await waitFor(() => client.seqs.length >= 2, 3000, "the next event");
    await sleep(200); // anything sent twice would have arrived by now
    expect(client.seqs).toEqual([1, 2]);
  });

  it("delivers an event whose bus message overtook the admission's reply to a second connection of an already subscribed user", async () => {
    const memory = createMemoryStore();
    let overtake = false;
    const store: Store = {
      ...memory,
      async admit(request) {
        const outcome = await memory.admit(request);
        if (overtake && outcome.status === "admitted") {
          await memory.publishEvent(outcome.record.sub, agentEvent(1), DEFAULT_LIMITS);
          await busTurn(); // delivered to the first connection only: the second is not registered yet
        }
        return outcome;
      },
    };
    const gw = await gatewayOn(store, memory);
    const first = await connectLive(gw, "twice");
    overtake = true;
    const second = await connectLive(gw, "twice");
    expect(second.frames[0]).toMatchObject({ type: "connection_established", latest_seq: 0 });
    await waitFor(() => first.seqs.length >= 1 && second.seqs.length >= 1, 3000, "the event on both");
    await memory.publishEvent("twice", agentEvent(2), DEFAULT_LIMITS);
    await waitFor(() => first.seqs.length >= 2 && second.seqs.length >= 2, 3000, "the next event on both");
    await sleep(200);
    expect(first.seqs).toEqual([1, 2]);
    expect(second.seqs).toEqual([1, 2]);
  });
});

describe("a revoke racing the connect", () => {
  it("ends a connection whose user was revoked after the admission step but before the subscription, with 4501", async () => {
    const memory = createMemoryStore();
    let gw: TestGateway | undefined;
    const store: Store = {
      ...memory,
      async subscribeUser(userId) {
        // The whole revoke, as the internal API runs it: its control message reaches no instance yet.
        expect(await gw!.app.hub.revoke(userId, Date.now(), 60_000)).toBe(0);
        await memory.subscribeUser(userId);
      },
    };
    gw = await gatewayOn(store, memory);
    const client = await TestClient.connect(gw, await ticketFor(gw, "raced"));
    expect(await client.closed).toEqual({ code: 4501, reason: "SESSION_REVOKED" });
    expect(client.frames.at(-1)).toMatchObject({ type: "error", code: "SESSION_REVOKED", fatal: true });
  });

  it("ends a second connection of a subscribed user whose revoke's bus message overtook the admission's reply, with 4501", async () => {
    const memory = createMemoryStore();
    let gw: TestGateway | undefined;
    let overtake = false;
    const store: Store = {
      ...memory,
      async admit(request) {
        const outcome = await memory.admit(request);
        if (overtake && outcome.status === "admitted") {
          await gw!.app.hub.revoke(outcome.record.sub, Date.now(), 60_000); // heard by this instance before the reply is
          await busTurn();
        }
        return outcome;
      },
    };
    gw = await gatewayOn(store, memory);
    const first = await connectLive(gw, "overtaken");
    overtake = true;
    const second = await TestClient.connect(gw, await ticketFor(gw, "overtaken"));
    expect(await first.closed).toEqual({ code: 4501, reason: "SESSION_REVOKED" });
    expect(await second.closed).toEqual({ code: 4501, reason: "SESSION_REVOKED" });
  });

  it("lets a connection live whose ticket was issued after a revoke that reaches its subscription late", async () => {
    const memory = createMemoryStore();
    await memory.revokeUser("back", Date.now() - 10_000, 60_000);
    const gw = await gatewayOn(memory, memory);
    const client = await connectLive(gw, "back");
    await client.waitForType("pong");
    await sleep(100);
    expect(client.socket.readyState).toBe(client.socket.OPEN);
    client.close();
  });
});

describe("counting per user", () => {
  it("uncounts a connection when it ends, so the user's next one is admitted at MAX_CONNECTIONS_PER_USER", async () => {
    const memory = createMemoryStore();
    const gw = await startGateway({ store: memory, env: { MAX_CONNECTIONS_PER_USER: "1" } });
    cleanups.push(() => memory.close(), () => gw.close());
    const one = await connectLive(gw, "single");
    const refused = await TestClient.connect(gw, await ticketFor(gw, "single"));
    expect((await refused.closed).reason).toBe("TOO_MANY_CONNECTIONS");
    one.close();
    await one.closed;
    await waitFor(() => gw.app.hub.size === 0, 2000, "the hub to let it go");
    const again = await connectLive(gw, "single");
    await again.waitForType("pong");
    again.close();
  });
});

describe("redemptions per address (addressBudget)", () => {
  it("refuses in memory past the limit before the store has answered, and brings in other instances' counts from the store", async () => {
    const memory = createMemoryStore();
    cleanups.push(() => memory.close());
    const calls: number[] = [];
    const counted: Store = { ...memory, addHits: (key, hits, windowMs) => (calls.push(hits), memory.addHits(key, hits, windowMs)) };
    const a = createAddressBudget({ store: counted, limit: 5 });
    const b = createAddressBudget({ store: counted, limit: 5 });
    cleanups.push(async () => (a.close(), b.close()));
    expect([1, 2, 3, 4, 5, 6].map(() => a.allow("10.0.0.1"))).toEqual([true, true, true, true, true, false]);
    expect(calls).toEqual([]); // nothing asked of the store on the way
    expect(a.allow("10.0.0.2")).toBe(true); // another address has its own count
    await waitFor(async () => (await memory.hit("redeem:10.0.0.1", 60_000)).count >= 7, 2000, "a's batch in the store");
    // b has counted nothing itself: its first attempt is allowed and brings back the store's count.
    expect(b.allow("10.0.0.1")).toBe(true);
    await waitFor(() => calls.length >= 3, 2000, "b's batch");
    await sleep(10);
    expect(b.allow("10.0.0.1")).toBe(false);
  });
});

describe("the client address at the upgrade (TRUST_PROXY_HOPS, as Fastify computes request.ip)", () => {
  it("counts redemptions per forwarded address behind one trusted proxy, and per peer without one", async () => {
    const memory = createMemoryStore();
    const behind = await startGateway({ store: memory, env: { TICKET_RATE_PER_IP: "2", TRUST_PROXY_HOPS: "1" } });
    const direct = await startGateway({ store: createMemoryStore(), env: { TICKET_RATE_PER_IP: "2" } });
    cleanups.push(() => memory.close(), () => behind.close(), () => direct.close());
    const guess = `${"C".repeat(43)}.${(Date.now() + 30_000).toString(36)}.1`;
    const attempt = async (gw: TestGateway, forwardedFor: string) =>
      (await new TestClient(`${gw.wsUrl}/ws?ticket=${guess}`, { headers: { "x-forwarded-for": forwardedFor } }).closed).reason;
    // Each forwarded address has its own count behind the proxy...
    expect(await Promise.all(["10.0.0.1", "10.0.0.2", "10.0.0.3"].map((a) => attempt(behind, `1.2.3.4, ${a}`)))).toEqual(Array(3).fill("TICKET_INVALID"));
    expect(await attempt(behind, "10.0.0.1")).toBe("TICKET_INVALID");
    expect(await attempt(behind, "9.9.9.9, 10.0.0.1")).toBe("RATE_LIMITED");
    // ...and a forwarded address is not believed without a trusted proxy: all three are the same peer.
    expect(await Promise.all(["10.0.0.1", "10.0.0.2"].map((a) => attempt(direct, a)))).toEqual(Array(2).fill("TICKET_INVALID"));
    expect(await attempt(direct, "10.0.0.3")).toBe("RATE_LIMITED");
  });
});
