/**
 * POST /internal/v1/events (docs/protocol.md §5): batched publishing against
 * two gateway instances and a real redis-server. Per-item results in order;
 * one bad item fails alone; a body that is not a batch is refused whole; a
 * user's items are stored in one round trip and delivered once, in order.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { startGateway, TestClient, TEST_SERVICE_SECRET, ticketFor, type TestGateway } from "../support/gateway.js";
import { MAX_DATA_DEPTH } from "../../service/src/realtime/events.js";

let redis: RedisServerHandle;
let gws: TestGateway[];
beforeAll(async () => {
  redis = await startRedis();
  gws = await Promise.all([0, 1].map(() => startGateway({ env: { REDIS_URL: redis.url } })));
});
afterAll(async () => {
  await Promise.all(gws.map((g) => g.close()));
  await redis?.stop();
});

type Result = { seq?: number; event_id?: string; error?: { code: string; message: string } };

async function batch(gw: TestGateway, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${gw.url}/internal/v1/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "batch-test", "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as { results?: Result[]; error?: { code: string; message: string } } };
}

const item = (user_id: string, n: number, extra: Record<string, unknown> = {}) => ({
  user_id,
  type: "agent_thinking",
  run_id: "run-1",
  thread_id: "thread-1",
  data: { n },
  ...extra,
});
const uid = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function connect(gw: TestGateway, user: string) {
  const client = await TestClient.connect(gw, await ticketFor(gw, user));
  await client.waitForType("connection_established");
  client.send({ type: "resume", last_seq: 0 }); // start live delivery at once
  await client.waitForType("resume_complete");
  return client;
}

describe("POST /internal/v1/events", () => {
  it("answers 207 with one result per item in order; each user's items get contiguous seqs in the given order, delivered once on every instance", async () => {
    const [alice, bob] = [uid("alice"), uid("bob")];
    const watchers = await Promise.all([connect(gws[0]!, alice), connect(gws[1]!, alice), connect(gws[1]!, bob)]);
    const items = range(1, 60).map((n) => item(n % 3 === 0 ? bob : alice, n));
    const { status, body } = await batch(gws[0]!, items);
    expect(status).toBe(207);
    const results = body.results!;
    expect(results).toHaveLength(60);
    expect(results.every((r) => typeof r.seq === "number" && /^[0-9a-f-]{36}$/.test(r.event_id ?? ""))).toBe(true);
    expect(results.filter((_, i) => items[i]!.user_id === alice).map((r) => r.seq)).toEqual(range(1, 40));
    expect(results.filter((_, i) => items[i]!.user_id === bob).map((r) => r.seq)).toEqual(range(1, 20));

    for (const [client, user, count] of [[watchers[0]!, alice, 40], [watchers[1]!, alice, 40], [watchers[2]!, bob, 20]] as const) {
      await client.waitFor(() => client.frames.filter((f) => typeof f.seq === "number").length >= count);
      const events = client.frames.filter((f) => typeof f.seq === "number");
      expect(events.map((f) => f.seq)).toEqual(range(1, count));
      const sent = items.filter((i) => i.user_id === user).map((i) => i.data.n);
      expect(events.map((f) => (f.data as { n: number }).n)).toEqual(sent);
      expect(events.map((f) => f.event_id)).toEqual(results.filter((_, i) => items[i]!.user_id === user).map((r) => r.event_id));
    }
    for (const c of watchers) c.close();
  });

  it("publishes the valid items of a mixed batch and gives each bad one the single route's error code", async () => {
    const user = uid("mixed");
    const big = { x: "z".repeat(70_000) };
    const items = [
      item(user, 1),
      item(user, 2, { type: "agent_dancing" }),
      item(user, 3, { seq: 7 }),
      { type: "agent_thinking", run_id: "r", thread_id: "t" }, // no user_id
      item(user, 5, { data: "text" }),
      item(user, 6, { data: big }),
      "not an object",
      item(user, 8, { run_id: "" }),
      item("u".repeat(257), 9),
      item(user, 10),
    ];
    const { status, body } = await batch(gws[1]!, items);
    expect(status).toBe(207);
    const codes = body.results!.map((r) => r.error?.code ?? r.seq);
    expect(codes).toEqual([1, "BAD_REQUEST", "BAD_REQUEST", "BAD_REQUEST", "BAD_REQUEST", "BODY_TOO_LARGE", "BAD_REQUEST", "BAD_REQUEST", "BAD_REQUEST", 2]);
    expect(body.results![1]!.error!.message).toMatch(/type must be one of/);
    expect(body.results![2]!.error!.message).toMatch(/Unknown field.*seq/);
    expect(body.results![3]!.error!.message).toMatch(/user_id/);
  });

  it("refuses, per item, data nested too deep to serialise, instead of failing the batch", async () => {
    const user = uid("deep");
    const deep = (n: number) => `{"user_id":"${user}","type":"agent_thinking","run_id":"r","thread_id":"t","data":${'{"a":'.repeat(n)}1${"}".repeat(n)}}`;
    const body = `[${deep(100_000)},${deep(MAX_DATA_DEPTH)},${deep(MAX_DATA_DEPTH + 1)},${JSON.stringify(item(user, 4))}]`;
    const { status, body: answer } = await batch(gws[0]!, body);
    expect(status).toBe(207);
    expect(answer.results!.map((r) => r.error?.code ?? r.seq)).toEqual(["BAD_REQUEST", 1, "BAD_REQUEST", 2]);
    expect(answer.results![0]!.error!.message).toMatch(new RegExp(`at most ${MAX_DATA_DEPTH} levels`));
  });

  it("treats event ids as the gateway's: an item naming one is refused, and two identical items are two events", async () => {
    const user = uid("dups");
    const same = item(user, 1);
    const { body } = await batch(gws[0]!, [same, same, item(user, 2, { event_id: "mine" }), item(user, 3, { event_id: "mine" })]);
    const [a, b, c, d] = body.results!;
    expect([a!.seq, b!.seq]).toEqual([1, 2]);
    expect(a!.event_id).not.toBe(b!.event_id);
    expect(c!.error?.code).toBe("BAD_REQUEST");
    expect(d!.error?.code).toBe("BAD_REQUEST");
  });

  it("publishes to a user the gateway has never seen: the event opens that user's stream", async () => {
    const { body } = await batch(gws[0]!, [item(uid("stranger"), 1)]);
    expect(body.results![0]!.seq).toBe(1);
  });

  it("refuses whole, publishing nothing: more than 500 items, an empty batch, a body that is not an array, and a body over 2 MiB", async () => {
    const user = uid("whole");
    const cases: Array<[unknown, number, RegExp]> = [
      [range(1, 501).map((n) => item(user, n)), 400, /501 events; at most 500/],
      [[], 400, /empty/],
      [item(user, 1), 400, /JSON array/],
      ["{not json", 400, /not valid JSON/],
      [range(1, 40).map((n) => item(user, n, { data: { x: "y".repeat(60_000) } })), 413, /too large/],
    ];
    for (const [body, status, message] of cases) {
      const res = await batch(gws[0]!, body);
      expect(res.status).toBe(status);
      expect(res.body.error?.message).toMatch(message);
    }
    const accepted = await batch(gws[0]!, range(1, 500).map((n) => item(user, n)));
    expect(accepted.status).toBe(207);
    expect(accepted.body.results!.map((r) => r.seq)).toEqual(range(1, 500)); // nothing of the refused batches was published
  });

  it("refuses a batch without the service secret or X-Service-Id with 401", async () => {
    expect((await batch(gws[0]!, [item("x", 1)], { authorization: "Bearer wrong" })).status).toBe(401);
    expect((await batch(gws[0]!, [item("x", 1)], { "x-service-id": "" })).status).toBe(401);
  });

  it("stores each user's items in one round trip: 300 events of 3 users cost 3 script calls", async () => {
    const users = [uid("rt"), uid("rt"), uid("rt")];
    const probe = new Redis(redis.url);
    try {
      const calls = async () => {
        const info = await probe.info("commandstats");
        return [...info.matchAll(/cmdstat_(evalsha|eval):calls=(\d+)/g)].reduce((sum, m) => sum + Number(m[2]), 0);
      };
      await batch(gws[0]!, users.map((u) => item(u, 0))); // the script is loaded and each user's stream exists
      const before = await calls();
      const { body } = await batch(gws[0]!, range(1, 300).map((n) => item(users[n % 3]!, n)));
      const after = await calls();
      expect(body.results!.every((r) => typeof r.seq === "number")).toBe(true);
      expect(after - before).toBe(3);
    } finally {
      probe.disconnect();
    }
  });
});

describe("when the store is down", () => {
  it("answers 207 with TICKET_STORE_UNAVAILABLE for each item, and publishes once it is back", async () => {
    const own = await startRedis();
    const gw = await startGateway({ env: { REDIS_URL: own.url } });
    try {
      await own.kill();
      const { status, body } = await batch(gw, [item("down-a", 1), item("down-b", 2)]);
      expect(status).toBe(207);
      expect(body.results!.map((r) => r.error?.code)).toEqual(["TICKET_STORE_UNAVAILABLE", "TICKET_STORE_UNAVAILABLE"]);
      await own.restart();
      let results: Result[] | undefined;
      for (let i = 0; i < 50 && !results?.every((r) => r.seq !== undefined); i++) {
        results = (await batch(gw, [item("down-a", 1), item("down-b", 2)])).body.results;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(results!.map((r) => r.seq)).toEqual([1, 1]);
    } finally {
      await gw.close();
      await own.stop();
    }
  });
});
