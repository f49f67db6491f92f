import { randomUUID } from "node:crypto";
import type { FastifyBaseLogger } from "fastify";
import type { EventPublisher } from "../realtime/events.js";

/**
 * A stand-in for a real agent backend: for every chat message it runs
 * started → thinking (×2) → tool executing → tool completed → completed,
 * paced like a model and a tool would be. It publishes through the same
 * EventPublisher as the internal API, so replacing it with a real backend
 * changes nothing in delivery.
 *
 * A message whose text contains "/fail" makes the run fail with agent_error,
 * to try the error path. Runs still going when the instance shuts down end
 * with agent_error ("interrupted"), so no timeline is left hanging.
 */
export type DemoAgent = ReturnType<typeof createDemoAgent>;

export function createDemoAgent(deps: { publisher: EventPublisher; stepDelayMs: number; log: FastifyBaseLogger }) {
  const running = new Map<string, { userId: string; threadId: string; abort: AbortController }>();

  async function run(runId: string, userId: string, threadId: string, text: string, signal: AbortSignal, onStarted: () => void): Promise<void> {
    const publish = (type: Parameters<EventPublisher["publish"]>[1]["type"], data: Record<string, unknown>) =>
      deps.publisher.publish(userId, { type, run_id: runId, thread_id: threadId, data });
    const pause = (factor = 1) => delay(deps.stepDelayMs * factor, signal);
    const query = text.trim().slice(0, 80);

    await publish("agent_started", { agent: "demo-assistant", input: query });
    onStarted();
    await pause();
    await publish("agent_thinking", { text: `Reading the question: “${query}”` });
    await pause();
    await publish("agent_thinking", { text: "Deciding which tool can answer it…" });
    await pause();
    const started = Date.now();
    await publish("tool_executing", { tool: "search_knowledge_base", input: { query } });
    await pause(2);
    if (/\/fail\b/.test(text)) {
      await publish("agent_error", { error: "TOOL_FAILED", message: "search_knowledge_base timed out (demo failure)" });
      return;
    }
    await publish("tool_completed", { tool: "search_knowledge_base", duration_ms: Date.now() - started, output: { results: 3 } });
    await pause();
    await publish("agent_completed", { text: `Here is what I found about “${query}”: three matching articles.`, words: text.split(/\s+/).length });
  }

  return {
    /**
     * Starts a run. Resolves true once its first event (agent_started) is
     * published, false if the run could not even start; the run goes on in
     * the background. Never rejects.
     */
    start(userId: string, threadId: string, text: string): Promise<boolean> {
      const runId = randomUUID();
      const abort = new AbortController();
      running.set(runId, { userId, threadId, abort });
      let began = false;
      let resolveStarted: (ok: boolean) => void = () => undefined;
      const started = new Promise<boolean>((resolve) => (resolveStarted = resolve));
      void run(runId, userId, threadId, text, abort.signal, () => {
        began = true;
        resolveStarted(true);
      })
        .catch(async (err) => {
          if (!began) return; // nothing was published: the caller reports the message as not accepted
          if (abort.signal.aborted) return;
          deps.log.warn({ err, event: "agent_run_failed", run_id: runId }, "demo agent run failed");
          await deps.publisher
            .publish(userId, { type: "agent_error", run_id: runId, thread_id: threadId, data: { error: "RUN_FAILED", message: "The agent run failed." } })
            .catch(() => undefined);
        })
        .finally(() => {
          running.delete(runId);
          resolveStarted(began);
        });
      return started;
    },

    /** Ends the running runs with agent_error "interrupted" (best effort: the store may be gone too). */
    async close(): Promise<void> {
      const runs = [...running.entries()];
      running.clear();
      await Promise.all(
        runs.map(([runId, r]) => {
          r.abort.abort();
          return deps.publisher
            .publish(r.userId, { type: "agent_error", run_id: runId, thread_id: r.threadId, data: { error: "INTERRUPTED", message: "The gateway instance restarted during this run." } })
            .catch(() => undefined);
        }),
      );
    },
  };
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });
}
