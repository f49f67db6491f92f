import type { GatewayApi, AgentEvent } from "./gatewayApi.js";

/**
 * The demo run, after its agent_started: thinking (two tokens, published in
 * one batch) → tool executing → tool completed → completed, paced like a model
 * and a tool would be. "/fail" in the text ends it with agent_error instead.
 * Publishes retry while the gateway restarts (gatewayApi.ts), so a run in
 * flight carries on across a gateway restart, in order.
 */
export interface RunInput {
  readonly message_id: string;
  readonly user_id: string;
  readonly thread_id: string;
  readonly text: string;
}

export async function runDemo(ctx: { api: GatewayApi; stepDelayMs: number; signal: AbortSignal }, input: RunInput, runId: string): Promise<void> {
  const event = (type: AgentEvent["type"], data: Record<string, unknown>): AgentEvent => ({ type, run_id: runId, thread_id: input.thread_id, data });
  const publish = (type: AgentEvent["type"], data: Record<string, unknown>) => ctx.api.publish(input.user_id, event(type, data));
  const pause = (factor = 1) => delay(ctx.stepDelayMs * factor, ctx.signal);
  const query = input.text.trim().slice(0, 80);

  await pause();
  // Thinking tokens come in bursts: one batch call, the events in order with contiguous seqs.
  const results = await ctx.api.publishBatch([
    { user_id: input.user_id, ...event("agent_thinking", { text: `Reading the question: “${query}”` }) },
    { user_id: input.user_id, ...event("agent_thinking", { text: "Deciding which tool can answer it…" }) },
  ]);
  const failed = results.find((r) => "error" in r);
  if (failed) throw new Error(`a thinking event was refused: ${JSON.stringify(failed)}`);
  await pause();
  const started = Date.now();
  await publish("tool_executing", { tool: "search_knowledge_base", input: { query } });
  await pause(2);
  if (/\/fail\b/.test(input.text)) {
    await publish("agent_error", { error: "TOOL_FAILED", message: "search_knowledge_base timed out (demo failure)" });
    return;
  }
  await publish("tool_completed", { tool: "search_knowledge_base", duration_ms: Date.now() - started, output: { results: 3 } });
  await pause();
  await publish("agent_completed", { text: `Here is what I found about “${query}”: three matching articles.`, words: input.text.split(/\s+/).length });
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });
}
