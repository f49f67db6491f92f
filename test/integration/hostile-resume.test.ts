import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPLAY_BUDGET } from "../../service/src/realtime/replayBudget.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { publishEvent, startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";

// Issue 13, item 1, as the attack: one user's sockets send `resume` from the
// start of a full history every 22 ms, inside the frame budget. Each resume
// reads the whole history from Redis; without a replay budget the loop never
// ends and the store's time goes to one user.
const HISTORY = 200;
let redis: RedisServerHandle;
let gw: TestGateway;
beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url, HISTORY_MAX_EVENTS: String(HISTORY), MAX_CONNECTIONS_PER_USER: "20" } });
  for (let i = 0; i < HISTORY; i++) await publishEvent(gw, "looper");
  await publishEvent(gw, "neighbour");
});
afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

describe("item 1: one user's resume loop cannot buy unbounded store work", () => {
  it("closes every looping socket with 4429 RATE_LIMITED, having replayed no more than the user's budget", async () => {
    const sockets = await Promise.all(Array.from({ length: 6 }, async () => TestClient.connect(gw, await ticketFor(gw, "looper"))));
    await Promise.all(sockets.map((s) => s.waitForType("connection_established")));
    const loops = sockets.map((s) => setInterval(() => s.socket.readyState === s.socket.OPEN && s.send({ type: "resume", last_seq: 0 }), 22));
    const started = Date.now();
    const closes = await Promise.all(sockets.map((s) => s.closed));
    const tookMs = Date.now() - started;
    loops.forEach(clearInterval);

    for (const close of closes) expect(close).toEqual({ code: 4429, reason: "RATE_LIMITED" });
    const replayed = sockets.flatMap((s) => s.frames.filter((f) => typeof f.seq === "number")).length;
    // The user's bucket, plus what it refilled while the test ran, plus one read in flight per socket.
    const budget = REPLAY_BUDGET.perUserHistories * HISTORY * (1 + tookMs / REPLAY_BUDGET.windowMs) + sockets.length * HISTORY;
    expect(replayed).toBeLessThanOrEqual(budget);
    // 6 sockets × 45 resumes a second: without the budget this is tens of thousands within the same time.
    expect(tookMs).toBeLessThan(10_000);
  });

  it("answers a burst of resumes from one socket with fewer reads than frames (coalesced), each event once", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "burster"));
    await client.waitForType("connection_established");
    for (let i = 0; i < 5; i++) await publishEvent(gw, "burster");
    await client.waitFor((f) => f.seq === 5);
    for (let i = 0; i < 10; i++) client.send({ type: "resume", last_seq: 0 });
    await client.waitForType("resume_complete");
    await new Promise((r) => setTimeout(r, 300));
    const completes = client.frames.filter((f) => f.type === "resume_complete");
    expect(completes.length).toBeLessThan(10);
    expect(client.seqs).toEqual([1, 2, 3, 4, 5]);
    expect(client.socket.readyState).toBe(client.socket.OPEN);
    client.close();
  });

  it("leaves other users' resumes alone while it throttles one", async () => {
    const client = await TestClient.connect(gw, await ticketFor(gw, "neighbour"));
    await client.waitForType("connection_established");
    client.send({ type: "resume", last_seq: 0 });
    expect(await client.waitForType("resume_complete")).toMatchObject({ replayed: 1 });
    client.close();
  });
});
