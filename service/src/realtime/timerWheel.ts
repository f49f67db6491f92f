/**
 * One coarse timer for every deadline of every connection in the process
 * (session warning and end, connection age, live hold) and the hub's periodic
 * work (heartbeat, connection refresh), instead of a `setTimeout` per socket:
 * a Node `Timeout` and its timer-list links cost ~120 B per socket and per
 * re-arm, and 10,000 idle sockets need none of them to be exact.
 *
 * A hashed wheel: deadlines fall into slots of `tickMs`, kept in a ring of
 * RING_SIZE buckets; each tick fires the entries of the slots that are due.
 * A deadline never fires early and at most about one tick late. The interval
 * is unref'd: the wheel never keeps the process alive.
 */

/**
 * What the wheel calls back. `wheelSlot` is the wheel's bookkeeping (0: not
 * scheduled); the host object carries it so that scheduling allocates
 * nothing per connection.
 */
export interface WheelEntry {
  wheelSlot: number;
  onDeadline(): void;
}

/** A repeating task (the hub's heartbeat and refresh): `stop()` ends it. */
export interface Repeating {
  stop(): void;
}

/** 1,024 slots of 250 ms: 256 s before a bucket is shared by deadlines a round apart. */
const RING_SIZE = 1024;

export class TimerWheel {
  private readonly ring: Array<Set<WheelEntry> | undefined> = new Array(RING_SIZE);
  /** The first slot no tick has fired yet. */
  private nextSlot: number;
  private readonly interval: NodeJS.Timeout;
  private count = 0;

  constructor(
    readonly tickMs: number,
    readonly now: () => number = () => Date.now(),
  ) {
    this.nextSlot = Math.floor(now() / tickMs) + 1;
    this.interval = setInterval(() => this.tick(), tickMs);
    this.interval.unref();
  }

  /** (Re)schedules `entry` to be called back at `at` (ms since the epoch), or on the next tick if that has passed. */
  schedule(entry: WheelEntry, at: number): void {
    this.cancel(entry);
    const slot = Math.max(Math.ceil(at / this.tickMs), this.nextSlot);
    const index = slot % RING_SIZE;
    const bucket = this.ring[index] ?? (this.ring[index] = new Set());
    bucket.add(entry);
    entry.wheelSlot = slot;
    this.count++;
  }

  cancel(entry: WheelEntry): void {
    if (entry.wheelSlot === 0) return;
    this.ring[entry.wheelSlot % RING_SIZE]?.delete(entry);
    entry.wheelSlot = 0;
    this.count--;
  }

  /** Entries waiting for their deadline (a closed connection leaves none behind). */
  get size(): number {
    return this.count;
  }

  /** Calls `task` every `periodMs` (to within a tick), on the grid of its first deadline so the period does not drift. */
  every(periodMs: number, task: () => void): Repeating {
    const wheel = this;
    const entry = {
      wheelSlot: 0,
      at: this.now() + periodMs,
      onDeadline(): void {
        // Skip periods a stalled process missed rather than firing them back to back.
        entry.at = Math.max(entry.at + periodMs, wheel.now());
        wheel.schedule(entry, entry.at);
        task();
      },
    };
    this.schedule(entry, entry.at);
    return { stop: () => this.cancel(entry) };
  }

  /** Stops the interval; scheduled entries never fire. */
  close(): void {
    clearInterval(this.interval);
  }

  private tick(): void {
    const due = Math.floor(this.now() / this.tickMs);
    if (due < this.nextSlot) return;
    const from = this.nextSlot;
    // Set first: an entry re-armed by its own callback lands in a later slot, not in this tick.
    this.nextSlot = due + 1;
    let failure: unknown;
    // After a stall longer than the ring, one pass over every bucket fires everything due.
    const last = Math.min(due, from + RING_SIZE - 1);
    for (let slot = from; slot <= last; slot++) {
      const bucket = this.ring[slot % RING_SIZE];
      if (bucket === undefined) continue;
      for (const entry of bucket) {
        if (entry.wheelSlot > due) continue; // a later round of this bucket
        bucket.delete(entry);
        entry.wheelSlot = 0;
        this.count--;
        try {
          entry.onDeadline();
        } catch (err) {
          failure ??= err;
        }
      }
      if (bucket.size === 0) this.ring[slot % RING_SIZE] = undefined;
    }
    // One callback's error neither skips the others nor disappears: it surfaces as a timer's would.
    if (failure !== undefined) throw failure;
  }
}
