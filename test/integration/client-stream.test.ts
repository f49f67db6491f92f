/**
 * The SDK's view of the event stream against a real gateway and redis-server:
 * holes are buffered and filled with one resume, every event reaches the app
 * once and in order, and resync_required sets a new baseline.
 */
import { describe, expect, it } from "vitest";
import { startRedis } from "../support/redis-server.js";
import { publishEvent, TestClient, ticketFor } from "../support/gateway.js";
import { clientFor, gatewaySuite, opened, range, sentOfType, startGatewayOn } from "./client-harness.js";
import { until } from "../support/wait.js";

const suite = gatewaySuite({ TICKET_RATE_PER_USER: "1000" });

async function publishMany(userId: string, n: number): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = 0; i < n; i++) seqs.push((await publishEvent(suite.gw, userId, { data: { i } })).body.seq as number);
  return seqs;
}

/** The user's current epoch, as a connection reports it. */
async function epochOf(userId: string): Promise<string> {
  const probe = await TestClient.connect(suite.gw, await ticketFor(suite.gw, userId));
  const established = await probe.waitForType("connection_established");
  probe.close();
  await probe.closed;
  return established.epoch as string;
}

const seqOf = (data: string): number | undefined => {
  const frame = JSON.parse(data) as { seq?: unknown };
  return typeof frame.seq === "number" ? frame.seq : undefined;
};

describe("holes", () => {
  it("live events that overtake the replay are buffered; one resume fills the hole; the app gets each once, in order", async () => {
    await publishMany("hole-1", 5);
    const epoch = await epochOf("hole-1");
    const arrived: number[] = [];
    let releaseResume: (() => void) | undefined;
    const c = suite.client("hole-1", {
      lastSeq: 2,
      epoch,
      hooks: {
        incoming: (data) => {
          const seq = seqOf(data);
          if (seq !== undefined) arrived.push(seq);
          return "pass";
        },
        // The resume is slow to reach the gateway (a congested uplink), so live events get there first (§8.1).
        outgoing: (data, send) => {
          if (JSON.parse(data).type === "resume") releaseResume = () => send(data);
          else send(data);
        },
      },
    });
    await opened(c);
    await publishMany("hole-1", 2); // seqs 6, 7, live
    await until("6 and 7 live", () => arrived.includes(7));
    expect(c.rec.seqs).toEqual([]); // held back: 3..5 are missing
    releaseResume!();
    await until("seq 7", () => c.rec.seqs.includes(7));
    // A later event as a fence instead of a fixed sleep: once 8 is through, a stray repeat of 3..7 would be too.
    await publishMany("hole-1", 1);
    await until("seq 8", () => c.rec.seqs.includes(8));

    expect(arrived.indexOf(6)).toBeLessThan(arrived.indexOf(3)); // the hole really happened
    expect(c.rec.seqs).toEqual([3, 4, 5, 6, 7, 8]);
    expect(sentOfType(c, "resume")).toEqual([{ type: "resume", last_seq: 2, epoch }]);
    expect(c.client.lastSeq).toBe(8);
  });

  it("a hole that this connection cannot fill (a lost frame) ends in a reconnect whose resume fills it", async () => {
    let dropped = false;
    const c = suite.client("hole-2", {
      hooks: {
        incoming: (data) => {
          if (!dropped && seqOf(data) === 2) {
            dropped = true;
            return "drop";
          }
          return "pass";
        },
      },
      backoff: { baseMs: 20, maxMs: 50 },
    });
    await opened(c);
    await publishMany("hole-2", 4);
    await until("seq 4", () => c.rec.seqs.includes(4));

    expect(dropped).toBe(true);
    expect(c.rec.seqs).toEqual([1, 2, 3, 4]);
    expect(c.rec.states.some((s) => s.errorCode === "STREAM_GAP")).toBe(true);
    // one resume on the first connection (answered with nothing: it believes it sent seq 2), one on the next
    expect(sentOfType(c, "resume").map((f) => f.last_seq)).toEqual([1, 1]);
    expect(c.sockets.urls).toHaveLength(2);
  });

  it("drops duplicates", async () => {
    const c = suite.client("dup-1", { hooks: { incoming: (data) => (seqOf(data) === undefined ? "pass" : "twice") } });
    await opened(c);
    await publishMany("dup-1", 3);
    await until("seq 3", () => c.rec.seqs.includes(3));
    // Every frame arrives twice; a fourth event is the fence that the copies of 1..3 were seen and dropped.
    await publishMany("dup-1", 1);
    await until("seq 4", () => c.rec.seqs.includes(4));
    expect(c.rec.seqs).toEqual([1, 2, 3, 4]);
  });
});

describe("resume", () => {
  it("picks up from a persisted position: what was missed while away, then live", async () => {
    const a = suite.client("resume-1");
    await opened(a);
    await publishMany("resume-1", 3);
    await until("seq 3", () => a.rec.seqs.includes(3));
    const position = { lastSeq: a.client.lastSeq, epoch: a.client.epoch };
    a.client.close();

    await publishMany("resume-1", 2); // 4, 5 while nobody listens
    const b = suite.client("resume-1", position);
    await opened(b);
    await publishMany("resume-1", 1);
    await until("seq 6", () => b.rec.seqs.includes(6));
    expect(b.rec.seqs).toEqual([4, 5, 6]);
    expect(b.rec.resyncs).toEqual([]);
  });
});

describe("resync_required", () => {
  it("on another epoch: emits resync, takes latest_seq as the baseline, and carries on", async () => {
    await publishMany("resync-1", 4);
    const c = suite.client("resync-1", { lastSeq: 2, epoch: "an-epoch-long-gone" });
    await until("resync", () => c.rec.resyncs.length > 0);
    expect(c.rec.resyncs[0]).toMatchObject({ latestSeq: 4, reason: "missed events are no longer available; reloaded" });
    expect(c.rec.resyncs[0]!.epoch).not.toBe("an-epoch-long-gone");
    expect(c.client.epoch).toBe(c.rec.resyncs[0]!.epoch);
    await publishMany("resync-1", 1);
    await until("seq 5", () => c.rec.seqs.includes(5));
    expect(c.rec.seqs).toEqual([5]);
  });

  it("when history no longer covers the gap", async () => {
    const short = await startGatewayOn(0, { REDIS_URL: suite.redis.url, HISTORY_MAX_EVENTS: "3" });
    try {
      for (let i = 0; i < 8; i++) await publishEvent(short, "resync-2");
      const probe = await TestClient.connect(short, await ticketFor(short, "resync-2"));
      const epoch = (await probe.waitForType("connection_established")).epoch as string;
      probe.close();
      const c = suite.track(clientFor(short, "resync-2", { lastSeq: 1, epoch }));
      await until("resync", () => c.rec.resyncs.length > 0);
      expect(c.rec.resyncs[0]).toMatchObject({ latestSeq: 8, epoch });
      expect(c.rec.seqs).toEqual([]); // nothing from the partial history is handed over as if it were complete
      await publishEvent(short, "resync-2");
      await until("seq 9", () => c.rec.seqs.includes(9));
      expect(c.rec.seqs).toEqual([9]);
    } finally {
      await short.close();
    }
  });

  it("when the store loses its data (a new epoch in the live stream): resync, then seqs from 1", async () => {
    const own = await startRedis();
    const g = await startGatewayOn(0, { REDIS_URL: own.url });
    try {
      const c = suite.track(clientFor(g, "resync-3"));
      await opened(c);
      for (let i = 0; i < 3; i++) await publishEvent(g, "resync-3");
      await until("seq 3", () => c.rec.seqs.includes(3));
      const before = c.client.epoch;

      await own.restart(); // SIGKILL, no persistence: every counter is gone
      // The gateway answers 503 until its Redis connection is back; publishers retry.
      await until("a publish accepted", async () => (await publishEvent(g, "resync-3").catch(() => ({ status: 0 }))).status === 202, 15_000, 100);
      await until("resync", () => c.rec.resyncs.length > 0, 15_000);
      const resync = c.rec.resyncs[0]!;
      // The new stream starts at 1; the baseline is wherever it stood when the gateway noticed (the event
      // published above is either delivered after the resync or covered by it, never both).
      expect(resync.epoch).not.toBe(before);
      expect(resync.latestSeq).toBeLessThanOrEqual(1);
      const next = (await publishEvent(g, "resync-3")).body.seq as number;
      expect(next).toBe(2);
      await until("the new seq 2", () => c.rec.seqs.at(-1) === 2, 5000);
      expect(c.rec.seqs).toEqual([...range(1, 3), ...range(resync.latestSeq! + 1, 2)]);
      expect(c.client.epoch).toBe(resync.epoch);
    } finally {
      await g.close();
      await own.stop();
    }
  });
});
