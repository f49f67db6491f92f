import { describe, expect, it } from "vitest";
import { createReplayBudgets, REPLAY_BUDGET } from "../../service/src/realtime/replayBudget.js";

// The resume budget with a clock in hand (replayBudget.ts): what one
// connection and one user may read a minute, and how it comes back.
const H = 100;
const clock = () => {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
};

describe("replay budget", () => {
  it("lets a connection read about perConnectionHistories full histories, then refuses until it refills", () => {
    const c = clock();
    const budget = createReplayBudgets({ historyMaxEvents: H, now: c.now }).forConnection("u");
    let reads = 0;
    while (budget.allows()) {
      budget.charge(H);
      reads++;
    }
    expect(reads).toBe(REPLAY_BUDGET.perConnectionHistories);
    c.advance(REPLAY_BUDGET.windowMs / REPLAY_BUDGET.perConnectionHistories);
    expect(budget.allows()).toBe(true);
  });

  it("shares the user's bucket between the user's connections, and not with other users", () => {
    const budgets = createReplayBudgets({ historyMaxEvents: H, now: clock().now });
    let reads = 0;
    for (let i = 0; i < 20; i++) {
      const conn = budgets.forConnection("u");
      while (conn.allows()) {
        conn.charge(H);
        reads++;
      }
    }
    expect(reads).toBe(REPLAY_BUDGET.perUserHistories);
    expect(budgets.forConnection("someone-else").allows()).toBe(true);
  });

  it("charges every resume a base cost, so resuming nothing is not free", () => {
    const budget = createReplayBudgets({ historyMaxEvents: H, now: clock().now }).forConnection("u");
    let resumes = 0;
    while (budget.allows()) {
      budget.charge(0);
      resumes++;
    }
    expect(resumes).toBe(Math.ceil((REPLAY_BUDGET.perConnectionHistories * H) / REPLAY_BUDGET.baseCost));
  });

  it("forgets users idle for a window (memory stays bounded by active users)", () => {
    const c = clock();
    const budgets = createReplayBudgets({ historyMaxEvents: H, now: c.now });
    for (let i = 0; i < 999; i++) budgets.forConnection(`user-${i}`).charge(1);
    expect(budgets.trackedUsers).toBe(999);
    c.advance(REPLAY_BUDGET.windowMs + 1);
    budgets.forConnection("late").charge(1); // the 1000th charge sweeps
    expect(budgets.trackedUsers).toBe(1);
  });
});
