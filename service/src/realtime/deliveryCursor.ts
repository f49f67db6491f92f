import { MESSAGES, type ErrorCode } from "../errors.js";
import type { HistoryRead, StoredEvent, StreamHead } from "../plugins/store/types.js";
import { eventFrame } from "./events.js";
import { errorFrame } from "./frames.js";
import type { TimerWheel, WheelEntry } from "./timerWheel.js";

/**
 * The order of what one connection is sent. No socket and no store here:
 * the connection supplies them as a `DeliveryIo`.
 *
 * One invariant: the seqs this connection has sent form the interval
 * (sentLow, sentHigh]. Live events extend it at the top, in order; a gap (a
 * lost bus message, or a bus outage) is filled from history before anything
 * later is sent; a `resume` fills it at the bottom and sends only what the
 * interval lacks. So every event reaches the socket once, and none is skipped
 * silently: when history cannot fill a gap the client is told
 * `resync_required`.
 *
 * A new connection holds its live events until the client has said where it
 * is (its first frame, normally `resume`) or LIVE_HOLD_MS has passed, so that
 * a resume's replay of older seqs always goes out before newer live ones.
 */
export interface DeliveryIo {
  readonly open: boolean;
  /** The user's events after `afterSeq`; undefined while the store cannot be reached. */
  readHistory(afterSeq: number): Promise<HistoryRead | undefined>;
  /** Sends a control frame; false when the connection is gone (or was cut as a slow consumer). */
  send(frame: string | object): boolean;
  /** Sends an event frame (counted as delivered). */
  sendEvent(frame: string): boolean;
  /** Waits while the socket's send buffer is over its mark (backpressure); false when the connection is gone. */
  waitForSendBuffer(): Promise<boolean>;
  countResume(outcome: ResumeOutcome): void;
  close(code: ErrorCode, message?: string): void;
  /** An unexpected error: log it and close the connection. */
  fail(err: unknown): void;
}

/** What a resume may read (replayBudget.ts). */
export interface ResumeBudget {
  allows(): boolean;
  charge(eventsRead: number): void;
}

export type ResumeOutcome = "ok" | "resync" | "unavailable" | "rate_limited";

type Task =
  | { kind: "live"; epoch: string; event: StoredEvent }
  | { kind: "resume"; lastSeq: number; epoch: string | undefined }
  | { kind: "catch_up" };

/** How long a new connection waits for the client's first frame before live events flow anyway. */
export const LIVE_HOLD_MS = 1000;
/** The store is down: a task is tried again after this. */
export const STORE_RETRY_MS = 500;

export class DeliveryCursor implements WheelEntry {
  /** The wheel's bookkeeping for the live hold. */
  wheelSlot = 0;
  private epoch = "";
  private sentLow = 0;
  private sentHigh = 0;
  private flushing = false;
  private held = true;
  private readonly queue: Task[] = [];

  constructor(
    private readonly io: DeliveryIo,
    private readonly budget: ResumeBudget,
    private readonly timers: TimerWheel,
  ) {}

  /** Starts from the stream head (read after the bus subscription was in place) and holds live events for LIVE_HOLD_MS. */
  start(head: StreamHead): void {
    this.epoch = head.epoch;
    this.sentLow = this.sentHigh = head.latestSeq;
    this.timers.schedule(this, this.timers.now() + LIVE_HOLD_MS);
  }

  /** The hold's deadline: the client said nothing, so live events flow. */
  onDeadline(): void {
    this.endHold();
  }

  deliverLive(epoch: string, event: StoredEvent): void {
    // Fast path, no allocation: the next event in order, nothing queued.
    if (!this.flushing && !this.held && this.queue.length === 0 && epoch === this.epoch) {
      if (event.seq === this.sentHigh + 1) return this.sendEvent(event);
      if (event.seq <= this.sentHigh) return; // already sent (a replay got there first)
    }
    this.enqueue({ kind: "live", epoch, event });
  }

  /** After a bus outage: send whatever was published while this instance could not hear it. */
  catchUp(): void {
    this.enqueue({ kind: "catch_up" });
  }

  /**
   * One resume in flight per connection: a resume asked for while another
   * waits in the queue replaces it (the newer position wins, and one
   * `resume_complete` answers both), so a burst of resumes costs one read.
   * A first resume ends the hold and goes ahead of the live events held meanwhile.
   */
  requestResume(lastSeq: number, epoch: string | undefined): void {
    const task: Task = { kind: "resume", lastSeq, epoch };
    if (this.held) return this.release(task);
    const waiting = this.queue.findIndex((t, i) => t.kind === "resume" && !(this.flushing && i === 0));
    if (waiting >= 0) this.queue[waiting] = task;
    else this.enqueue(task);
  }

  /** Ends the hold of a new connection (the client's first frame, or LIVE_HOLD_MS). */
  endHold(): void {
    this.release();
  }

  /** Ends the hold; a first resume goes ahead of what was held. */
  private release(first?: Task): void {
    if (!this.held) return;
    this.held = false;
    this.timers.cancel(this);
    if (first) this.queue.unshift(first);
    if (!this.flushing && this.queue.length > 0) void this.flushQueue();
  }

  /** The connection closed: drop what is queued and the hold. */
  stop(): void {
    this.queue.length = 0;
    this.timers.cancel(this);
  }

  private enqueue(task: Task): void {
    this.queue.push(task);
    if (!this.flushing && !this.held) void this.flushQueue();
  }

  /** Runs the queued tasks in order, one at a time. */
  private async flushQueue(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0 && this.io.open) {
        const task = this.queue[0]!;
        const done = await this.run(task);
        if (done) this.queue.shift();
        else await sleep(STORE_RETRY_MS); // the store is down: keep the task, try again
      }
    } catch (err) {
      this.io.fail(err);
    } finally {
      this.flushing = false;
    }
  }

  /** Returns false when the store was unreachable and the task must be retried. */
  private async run(task: Task): Promise<boolean> {
    if (task.kind === "resume") return this.resume(task.lastSeq, task.epoch);
    if (task.kind === "catch_up") return this.fill(this.sentHigh + 1);
    const { epoch, event } = task;
    if (epoch !== this.epoch) {
      // The store lost its data and the counter started again: say so, then carry on from the new stream.
      this.resync(event.seq - 1, epoch);
    }
    if (event.seq <= this.sentHigh) return true;
    if (event.seq > this.sentHigh + 1 && !(await this.fill(event.seq))) return false;
    if (event.seq === this.sentHigh + 1) this.sendEvent(event);
    return true;
  }

  /** Sends everything after sentHigh up to at least `through - 1` from history. */
  private async fill(through: number): Promise<boolean> {
    const read = await this.io.readHistory(this.sentHigh);
    if (read === undefined) return false;
    if (read.epoch !== this.epoch) {
      this.resync(read.latestSeq, read.epoch);
      return true;
    }
    for (const e of read.events) {
      if (e.seq !== this.sentHigh + 1) continue;
      if (!(await this.io.waitForSendBuffer())) return true;
      this.sendEvent(e);
    }
    if (this.sentHigh < through - 1) {
      // History no longer covers the gap: the client must reload rather than miss events silently.
      this.resync(through - 1, read.epoch);
    }
    return true;
  }

  private async resume(lastSeq: number, clientEpoch: string | undefined): Promise<boolean> {
    if (!this.budget.allows()) {
      this.io.countResume("rate_limited");
      this.io.close("RATE_LIMITED", "Too many resumes. Reconnect after a pause, then resume once.");
      return true;
    }
    const read = await this.io.readHistory(lastSeq);
    // Charged what it read, not what it sent: reading is what costs the store.
    this.budget.charge(read?.events.length ?? 0);
    if (read === undefined) {
      this.io.countResume("unavailable");
      this.io.send(errorFrame("TICKET_STORE_UNAVAILABLE", { fatal: false, message: "History is unavailable right now; send resume again shortly." }));
      return true; // the client retries; do not block live delivery behind it
    }
    if ((clientEpoch !== undefined && clientEpoch !== read.epoch) || read.epoch !== this.epoch || !read.complete) {
      this.io.countResume("resync");
      // Within one epoch the latest seq never falls, so it is at least what this connection has sent.
      this.resync(read.latestSeq, read.epoch);
      return true;
    }
    let replayed = 0;
    for (const e of read.events) {
      if (e.seq > lastSeq && (e.seq <= this.sentLow || e.seq > this.sentHigh)) {
        if (!(await this.io.waitForSendBuffer())) return true;
        this.io.sendEvent(eventFrame(e.seq, e.body));
        replayed++;
      }
    }
    this.sentLow = Math.min(this.sentLow, lastSeq);
    this.sentHigh = Math.max(this.sentHigh, read.latestSeq);
    this.io.countResume("ok");
    this.io.send({ type: "resume_complete", replayed });
    return true;
  }

  private resync(latestSeq: number, epoch: string): void {
    this.epoch = epoch;
    this.sentLow = this.sentHigh = latestSeq;
    this.io.send({ type: "resync_required", code: "HISTORY_UNAVAILABLE", message: MESSAGES.HISTORY_UNAVAILABLE, latest_seq: latestSeq, epoch });
  }

  private sendEvent(event: StoredEvent): void {
    this.sentHigh = event.seq;
    this.io.sendEvent(eventFrame(event.seq, event.body));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
