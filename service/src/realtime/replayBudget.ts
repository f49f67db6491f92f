/**
 * What a `resume` may cost the store. A resume is one small frame, but it
 * makes the gateway read up to HISTORY_MAX_EVENTS events from Redis: 10-20
 * sockets of one user resuming 1,000 events back every 22 ms (inside the
 * frame budget) took 3 ms of Redis time each and slowed every other user's
 * connect from 9 ms to a second. So resumes are charged what they read, from
 * two token buckets refilled continuously: one per connection and one per
 * user (shared by the user's connections on this instance). A resume asked
 * for while a bucket is empty closes the connection with 4429 RATE_LIMITED.
 *
 * The sizes come from the history bound H (HISTORY_MAX_EVENTS): a
 * connection may read 2 H events a minute (two full replays, where a
 * reconnecting client needs one, and usually far less), a user 4 H a minute
 * across its connections on this instance. Measured in drill 8: at 10 H a
 * user, ten abusers' opening bursts of full replays alone kept a CPU-starved
 * Redis busy long enough to time out other users' ticket requests.
 * Every resume also costs `baseCost` events, so resuming
 * nothing in a loop is not free either.
 */
export const REPLAY_BUDGET = { perConnectionHistories: 2, perUserHistories: 4, baseCost: 10, windowMs: 60_000 } as const;

/** Users idle this long have full buckets and are forgotten. */
const FORGET_AFTER_MS = REPLAY_BUDGET.windowMs;
const SWEEP_EVERY = 1000;

class Bucket {
  private tokens: number;
  lastUsed: number;

  constructor(
    private readonly capacity: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.lastUsed = now;
  }

  refill(now: number): number {
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.lastUsed) / REPLAY_BUDGET.windowMs) * this.capacity);
    this.lastUsed = now;
    return this.tokens;
  }

  take(cost: number, now: number): void {
    this.refill(now);
    this.tokens -= cost;
  }
}

export type ReplayBudgets = ReturnType<typeof createReplayBudgets>;
export type ConnectionReplayBudget = ReturnType<ReplayBudgets["forConnection"]>;

export function createReplayBudgets(options: { historyMaxEvents: number; now?: () => number }) {
  const now = options.now ?? Date.now;
  const perConnection = REPLAY_BUDGET.perConnectionHistories * options.historyMaxEvents;
  const perUser = REPLAY_BUDGET.perUserHistories * options.historyMaxEvents;
  const users = new Map<string, Bucket>();
  let charges = 0;

  const userBucket = (userId: string): Bucket => {
    let bucket = users.get(userId);
    if (bucket === undefined) users.set(userId, (bucket = new Bucket(perUser, now())));
    return bucket;
  };
  const sweep = (): void => {
    const cutoff = now() - FORGET_AFTER_MS;
    for (const [userId, bucket] of users) if (bucket.lastUsed < cutoff) users.delete(userId);
  };

  return {
    /** The budget of one connection of `userId`. */
    forConnection(userId: string) {
      const own = new Bucket(perConnection, now());
      return {
        /** Whether a resume may read the store now: both buckets still hold something. */
        allows(): boolean {
          const at = now();
          return own.refill(at) > 0 && userBucket(userId).refill(at) > 0;
        },
        /** Charges a resume that read `eventsRead` events. */
        charge(eventsRead: number): void {
          const at = now();
          const cost = REPLAY_BUDGET.baseCost + eventsRead;
          own.take(cost, at);
          userBucket(userId).take(cost, at);
          if (++charges % SWEEP_EVERY === 0) sweep();
        },
      };
    },
    /** Users with a bucket in memory (for tests of the sweep). */
    get trackedUsers(): number {
      return users.size;
    },
  };
}
