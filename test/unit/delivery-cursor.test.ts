import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DeliveryCursor, LIVE_HOLD_MS, STORE_RETRY_MS, type DeliveryIo, type ResumeOutcome } from "../../service/src/realtime/deliveryCursor.js";
import { TimerWheel } from "../../service/src/realtime/timerWheel.js";
import type { HistoryRead, StoredEvent } from "../../service/src/plugins/store/types.js";

/**
 * The delivery cursor against an in-memory history and a recording socket:
 * no store, no socket, fake time for the live hold. Each test says which
 * seqs the client receives, in which order.
 */

const EPOCH = "e1";
const event = (seq: number): StoredEvent => ({ seq, body: `{"type":"agent_thinking","n":${seq}}` });

interface Frame {
  type?: string;
  seq?: number;
  latest_seq?: number;
  replayed?: number;
  code?: string;
}

/** A user's stream (seqs 1..latest, the oldest `trimmed` of them gone) and what the cursor sent. */
function harness(options: { latest?: number; trimmedThrough?: number } = {}) {
  const stream = { latest: options.latest ?? 0, trimmedThrough: options.trimmedThrough ?? 0, epoch: EPOCH, unavailable: false };
  const frames: Frame[] = [];
  const outcomes: ResumeOutcome[] = [];
  const reads: number[] = [];
  let closedWith: string | undefined;
  const io: DeliveryIo = {
    open: true,
    async readHistory(afterSeq: number): Promise<HistoryRead | undefined> {
      reads.push(afterSeq);
      if (stream.unavailable) return undefined;
      const first = Math.max(afterSeq, stream.trimmedThrough) + 1;
      const events: StoredEvent[] = [];
      for (let seq = first; seq <= stream.latest; seq++) events.push(event(seq));
      return { epoch: stream.epoch, latestSeq: stream.latest, events, complete: afterSeq >= stream.trimmedThrough && afterSeq <= stream.latest };
    },
    send: (frame) => frames.push(typeof frame === "string" ? (JSON.parse(frame) as Frame) : (frame as Frame)) > 0,
    sendEvent: (frame) => frames.push(JSON.parse(frame) as Frame) > 0,
    waitForSendBuffer: async () => true,
    countResume: (outcome) => void outcomes.push(outcome),
    close: (code) => void (closedWith = code),
    fail: (err) => {
      throw err;
    },
  };
  const budget = { allowed: true, allows: () => budget.allowed, charge: () => undefined };
  const wheel = new TimerWheel(250);
  const cursor = new DeliveryCursor(io, budget, wheel);
  /** Publishes the next seq to the stream and, unless `lost`, delivers it live. */
  const publish = (options: { lost?: boolean } = {}) => {
    stream.latest++;
    if (!options.lost) cursor.deliverLive(stream.epoch, event(stream.latest));
  };
  return {
    stream,
    frames,
    outcomes,
    reads,
    budget,
    wheel,
    cursor,
    publish,
    closedWith: () => closedWith,
    seqs: () => frames.filter((f) => f.seq !== undefined).map((f) => f.seq),
    types: () => frames.map((f) => (f.seq !== undefined ? `seq ${f.seq}` : f.type)),
  };
}

/** Lets the cursor's queued work (promises, no timers) run to the end. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

let wheels: TimerWheel[] = [];
beforeEach(() => {
  // setImmediate stays real: `settle` runs the cursor's promise chains without moving the clock.
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
});
afterEach(() => {
  for (const wheel of wheels) wheel.close();
  wheels = [];
  vi.useRealTimers();
});

/** A started cursor whose hold has ended (the client's first frame was not a resume). */
function live(options: { latest?: number; trimmedThrough?: number } = {}) {
  const h = harness(options);
  wheels.push(h.wheel);
  h.cursor.start({ latestSeq: h.stream.latest, epoch: EPOCH });
  h.cursor.endHold();
  return h;
}

describe("live delivery", () => {
  it("sends live events in order, each once", async () => {
    const h = live({ latest: 3 });
    for (let i = 0; i < 5; i++) h.publish();
    await settle();
    expect(h.seqs()).toEqual([4, 5, 6, 7, 8]);
    expect(h.reads).toEqual([]); // in order: no history read at all
  });

  it("ignores a live event it has already sent", async () => {
    const h = live();
    h.publish();
    h.publish();
    h.cursor.deliverLive(EPOCH, event(1));
    h.cursor.deliverLive(EPOCH, event(2));
    h.publish();
    await settle();
    expect(h.seqs()).toEqual([1, 2, 3]);
  });

  it("fills a gap from history before sending the later live event", async () => {
    const h = live();
    h.publish();
    h.publish({ lost: true }); // 2 never arrives on the bus
    h.publish({ lost: true }); // nor 3
    h.publish(); // 4 arrives: 2 and 3 come from history first
    h.publish(); // 5 arrives while the gap is being filled: it waits its turn
    await settle();
    expect(h.seqs()).toEqual([1, 2, 3, 4, 5]);
    expect(h.reads).toEqual([1]);
  });

  it("tells the client resync_required when history no longer covers a gap", async () => {
    const h = live();
    h.publish();
    for (let i = 0; i < 5; i++) h.publish({ lost: true });
    h.stream.trimmedThrough = 4; // 2..4 are gone from history
    h.publish(); // 7
    await settle();
    // Nothing after the hole is sent out of order: the client reloads up to 6, then 7 follows live.
    expect(h.types()).toEqual(["seq 1", "resync_required", "seq 7"]);
    expect(h.frames[1]).toMatchObject({ code: "HISTORY_UNAVAILABLE", latest_seq: 6 });
  });

  it("keeps a gap while the store is down and fills it once it answers", async () => {
    const h = live();
    h.publish();
    h.publish({ lost: true });
    h.stream.unavailable = true;
    h.publish(); // 3: needs 2 from history
    await settle();
    expect(h.seqs()).toEqual([1]);
    h.stream.unavailable = false;
    await vi.advanceTimersByTimeAsync(STORE_RETRY_MS);
    await settle();
    expect(h.seqs()).toEqual([1, 2, 3]);
  });

  it("catches up from history after a bus outage", async () => {
    const h = live();
    h.publish();
    h.publish({ lost: true });
    h.publish({ lost: true });
    h.cursor.catchUp();
    await settle();
    expect(h.seqs()).toEqual([1, 2, 3]);
  });
});

describe("resume", () => {
  it("sends only what the sent interval lacks, then resume_complete", async () => {
    // Connected at head 5, then 6 and 7 arrived live: the interval is (5, 7].
    const h = live({ latest: 5 });
    h.publish();
    h.publish();
    // The client had 1 and 2 before it reconnected: it lacks 3..5 only.
    h.cursor.requestResume(2, EPOCH);
    await settle();
    expect(h.types()).toEqual(["seq 6", "seq 7", "seq 3", "seq 4", "seq 5", "resume_complete"]);
    expect(h.frames.at(-1)).toMatchObject({ replayed: 3 });
    // The interval is now (2, 7]: live 8 follows, and nothing is sent twice.
    h.publish();
    await settle();
    expect(h.seqs()).toEqual([6, 7, 3, 4, 5, 8]);
    expect(h.outcomes).toEqual(["ok"]);
  });

  it("answers resync_required when history cannot cover the resume", async () => {
    const h = live({ latest: 10, trimmedThrough: 6 });
    h.cursor.requestResume(2, EPOCH);
    await settle();
    expect(h.types()).toEqual(["resync_required"]);
    expect(h.frames[0]).toMatchObject({ latest_seq: 10 });
    expect(h.outcomes).toEqual(["resync"]);
  });

  it("answers resync_required to a resume from another epoch", async () => {
    const h = live({ latest: 3 });
    h.cursor.requestResume(1, "an-older-epoch");
    await settle();
    expect(h.types()).toEqual(["resync_required"]);
  });

  it("closes with RATE_LIMITED when the replay budget is spent, reading nothing", async () => {
    const h = live({ latest: 3 });
    h.budget.allowed = false;
    h.cursor.requestResume(0, EPOCH);
    await settle();
    expect(h.closedWith()).toBe("RATE_LIMITED");
    expect(h.reads).toEqual([]);
    expect(h.outcomes).toEqual(["rate_limited"]);
  });
});

describe("the live hold of a new connection", () => {
  it("holds live events until the client's first resume, and replays older seqs before them", async () => {
    const h = harness({ latest: 4 });
    wheels.push(h.wheel);
    h.cursor.start({ latestSeq: 4, epoch: EPOCH });
    h.publish(); // 5 arrives before the client has said where it is
    await settle();
    expect(h.frames).toEqual([]);
    h.cursor.requestResume(2, EPOCH);
    await settle();
    // 5 went out once, in order, from the replay: the held live copy is a duplicate by then.
    expect(h.types()).toEqual(["seq 3", "seq 4", "seq 5", "resume_complete"]);
  });

  it("holds live events for LIVE_HOLD_MS when the client says nothing, then sends them", async () => {
    const h = harness();
    wheels.push(h.wheel);
    h.cursor.start({ latestSeq: 0, epoch: EPOCH });
    h.publish();
    h.publish();
    await vi.advanceTimersByTimeAsync(LIVE_HOLD_MS - 1);
    expect(h.frames).toEqual([]);
    await vi.advanceTimersByTimeAsync(h.wheel.tickMs + 1);
    await settle();
    expect(h.seqs()).toEqual([1, 2]);
  });

  it("ends the hold on any other first frame", async () => {
    const h = harness();
    wheels.push(h.wheel);
    h.cursor.start({ latestSeq: 0, epoch: EPOCH });
    h.publish();
    h.cursor.endHold();
    await settle();
    expect(h.seqs()).toEqual([1]);
  });
});
