import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { publishEvent, startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";

// What a client holds: the contiguous seqs it has, and the epoch of the stream.
class ResumingClient {
  seqs: number[] = [];
  epoch: string | undefined;
  resyncs: Array<Record<string, unknown>> = [];
  client: TestClient | undefined;

  constructor(readonly user: string) {}

  get last(): number {
    return this.seqs.at(-1) ?? 0;
  }

  /** Connects through `gw`; with state, sends resume first, like the SDK. */
  async connect(gw: TestGateway): Promise<TestClient> {
    const client = await TestClient.connect(gw, await ticketFor(gw, this.user));
    const established = await client.waitForType("connection_established");
    this.client = client;
    client.socket.on("message", (data) => {
      const f = JSON.parse(data.toString()) as Record<string, unknown>;
      if (typeof f.seq === "number") {
        // A client never skips: anything but the next seq is a protocol violation here.
        if (f.seq > this.last) this.seqs.push(f.seq);
        else this.seqs.push(-f.seq); // marks a duplicate
      }
      if (f.type === "resync_required") {
        this.resyncs.push(f);
        this.seqs = [];
        this.base = f.latest_seq as number;
        this.epoch = f.epoch as string;
      }
    });
    if (this.epoch === undefined) {
      this.epoch = established.epoch as string;
      this.base = established.latest_seq as number;
    } else {
      client.send({ type: "resume", last_seq: this.lastSeq, epoch: this.epoch });
    }
    return client;
  }

  base = 0;
  get lastSeq(): number {
    return this.seqs.length ? this.last : this.base;
  }
}

let redis: RedisServerHandle;
let a: TestGateway;
let b: TestGateway;
beforeAll(async () => {
  redis = await startRedis();
  [a, b] = await Promise.all([
    startGateway({ env: { REDIS_URL: redis.url, HISTORY_MAX_EVENTS: "50" } }),
    startGateway({ env: { REDIS_URL: redis.url, HISTORY_MAX_EVENTS: "50" } }),
  ]);
});
afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await redis?.stop();
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("resume", () => {
  it("replays what was published while the client was away, then resume_complete, with no hole and no duplicate", async () => {
    const user = new ResumingClient("away");
    const first = await user.connect(a);
    for (let i = 0; i < 5; i++) await publishEvent(a, "away");
    await first.waitFor((f) => f.seq === 5);
    first.close();
    await first.closed;
    for (let i = 0; i < 7; i++) await publishEvent(b, "away");
    const second = await user.connect(b);
    expect(await second.waitForType("resume_complete")).toEqual({ type: "resume_complete", replayed: 7 });
    await publishEvent(a, "away");
    await second.waitFor((f) => f.seq === 13);
    expect(user.seqs).toEqual(range(1, 13));
    second.close();
  });

  it("loses and doubles nothing when events keep arriving during the replay", async () => {
    const user = new ResumingClient("busy-stream");
    const first = await user.connect(a);
    await publishEvent(a, "busy-stream");
    await first.waitFor((f) => f.seq === 1);
    first.close();
    await first.closed;
    let publishing = true;
    let published = 1;
    const publisher = (async () => {
      while (publishing) {
        await publishEvent(b, "busy-stream");
        published++;
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    const second = await user.connect(a);
    await second.waitForType("resume_complete");
    await new Promise((r) => setTimeout(r, 100));
    publishing = false;
    await publisher;
    await second.waitFor((f) => f.seq === published);
    expect(user.seqs).toEqual(range(1, published));
    second.close();
  });

  it("answers resync_required when the history was trimmed past the gap", async () => {
    const user = new ResumingClient("trimmed");
    const first = await user.connect(a);
    await publishEvent(a, "trimmed");
    await first.waitFor((f) => f.seq === 1);
    first.close();
    await first.closed;
    for (let i = 0; i < 60; i++) await publishEvent(a, "trimmed"); // HISTORY_MAX_EVENTS is 50
    const second = await user.connect(b);
    const resync = await second.waitForType("resync_required");
    expect(resync).toMatchObject({ code: "HISTORY_UNAVAILABLE", latest_seq: 61 });
    await publishEvent(a, "trimmed");
    await second.waitFor((f) => f.seq === 62);
    expect(user.seqs).toEqual([62]);
    second.close();
  });

  it("answers resync_required to a last_seq beyond the user's latest seq, or another epoch", async () => {
    const client = await TestClient.connect(a, await ticketFor(a, "from-the-future"));
    const established = await client.waitForType("connection_established");
    client.send({ type: "resume", last_seq: 5 });
    expect(await client.waitForType("resync_required")).toMatchObject({ code: "HISTORY_UNAVAILABLE", latest_seq: 0 });
    client.send({ type: "resume", last_seq: 0, epoch: "another-epoch" });
    await client.waitFor((f) => f.type === "resync_required" && f.epoch === established.epoch, { from: client.frames.length });
    client.close();
  });

  it("lets the clients of a drained instance (4012) resume on another with nothing lost", async () => {
    const extra = await startGateway({ env: { REDIS_URL: redis.url } });
    const users = Array.from({ length: 20 }, (_, i) => new ResumingClient(`drained-${i}`));
    const clients = await Promise.all(users.map((u) => u.connect(extra)));
    await Promise.all(users.map((u) => publishEvent(a, u.user)));
    await Promise.all(clients.map((c) => c.waitFor((f) => f.seq === 1)));
    const closing = extra.close();
    const closes = await Promise.all(clients.map((c) => c.closed));
    await closing;
    expect(closes.every((c) => c.code === 4012)).toBe(true);
    await Promise.all(users.map((u) => publishEvent(a, u.user)));
    const again = await Promise.all(users.map((u) => u.connect(b)));
    await Promise.all(again.map((c) => c.waitForType("resume_complete")));
    await Promise.all(users.map((u) => publishEvent(a, u.user)));
    await Promise.all(again.map((c) => c.waitFor((f) => f.seq === 3)));
    for (const u of users) expect(u.seqs).toEqual([1, 2, 3]);
    for (const c of again) c.close();
  });

  it("survives a Redis restart that lost the data: publishing fails cleanly or succeeds, and the client learns of the new stream", async () => {
    const user = new ResumingClient("redis-restart");
    const client = await user.connect(a);
    for (let i = 0; i < 3; i++) await publishEvent(a, "redis-restart");
    await client.waitFor((f) => f.seq === 3);
    await redis.kill();
    const during = await publishEvent(a, "redis-restart");
    expect(during.status).toBe(503);
    expect((during.body as { error: { code: string } }).error.code).toBe("TICKET_STORE_UNAVAILABLE");
    await redis.restart();
    // The established socket stayed open through the outage.
    expect(client.socket.readyState).toBe(client.socket.OPEN);
    await expect.poll(async () => (await publishEvent(a, "redis-restart")).status, { timeout: 10_000, interval: 200 }).toBe(202);
    // The counter started again at 1 in a new epoch: the client is told (resync_required with the new
    // baseline), never handed the new stream's seqs as if nothing happened, and continues from there.
    const resync = await client.waitForType("resync_required", { timeoutMs: 10_000 });
    const base = resync.latest_seq as number;
    const after = client.frames.indexOf(resync);
    const last = await publishEvent(a, "redis-restart");
    const lastSeq = (last.body as { seq: number }).seq;
    await client.waitFor((f) => f.seq === lastSeq, { from: after });
    expect(user.resyncs).toHaveLength(1);
    expect(user.seqs, JSON.stringify(client.frames.map((f) => [f.type, f.seq, f.latest_seq]))).toEqual(range(base + 1, lastSeq));
    client.close();
  });
});
