import type { AgentEventInput, HistoryLimits } from "../../service/src/plugins/store/types.js";

/** History limits as the gateway's defaults set them. */
export const DEFAULT_LIMITS: HistoryLimits = { maxEvents: 1000, ttlMs: 900_000 };

/** An agent event numbered `n` (its event_id `e<n>`), of one run in one thread. */
export const agentEvent = (n: number): AgentEventInput => ({
  type: "agent_thinking",
  event_id: `e${n}`,
  run_id: "run-1",
  thread_id: "thread-1",
  ts: new Date().toISOString(),
  data: { n },
});
