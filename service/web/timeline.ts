/**
 * The chat timeline: one card per agent run with its steps in seq order, a
 * bubble per chat message the user sent (with its delivery status), and
 * notes from the page.
 */
import type { AgentEvent } from "../client/index.js";
import { clock, make, ui } from "./dom.js";

interface RunView {
  readonly card: HTMLElement;
  readonly steps: HTMLOListElement;
  readonly chip: HTMLElement;
}

const STEP: Record<AgentEvent["type"], { label: string; glyph: string }> = {
  agent_started: { label: "Started", glyph: "▶" },
  agent_thinking: { label: "Thinking", glyph: "…" },
  tool_executing: { label: "Running tool", glyph: "⚙" },
  tool_completed: { label: "Tool done", glyph: "✓" },
  agent_completed: { label: "Completed", glyph: "✔" },
  agent_error: { label: "Error", glyph: "!" },
};

const runs = new Map<string, RunView>();
const bubbles = new Map<string, HTMLElement>();

/** Appends to the timeline, and keeps it scrolled to the bottom when it was there (within `slackPx`). */
function appendToTimeline(node: HTMLElement, slackPx = 80): void {
  ui.empty.hidden = true;
  const atBottom = ui.timeline.scrollHeight - ui.timeline.scrollTop - ui.timeline.clientHeight < slackPx;
  ui.timeline.append(node);
  if (atBottom) ui.timeline.scrollTop = ui.timeline.scrollHeight;
}

export function addBubble(messageId: string, text: string, queued: boolean): void {
  const bubble = make("div", "bubble");
  bubble.dataset.testid = "chat-message";
  bubble.dataset.messageId = messageId;
  const meta = make("div", "bubble-meta", queued ? "Queued, sends when connected" : "Sending…");
  bubble.dataset.status = queued ? "queued" : "sending";
  bubble.append(make("div", "bubble-text", text), meta);
  bubbles.set(messageId, bubble);
  appendToTimeline(bubble);
}

export function markBubble(messageId: string, status: string, text: string): void {
  const bubble = bubbles.get(messageId);
  if (!bubble) return;
  bubble.dataset.status = status;
  const meta = bubble.querySelector(".bubble-meta");
  if (meta) meta.textContent = text;
}

export function addNote(text: string): void {
  appendToTimeline(make("div", "note", text));
}

function runView(event: AgentEvent): RunView {
  const existing = runs.get(event.run_id);
  if (existing) return existing;
  const card = make("article", "run");
  card.dataset.runId = event.run_id;
  card.dataset.state = "running";
  const header = make("header", "run-header");
  const title = make("div", "run-title", "Agent run");
  const id = make("span", "run-id", event.run_id.slice(0, 8));
  title.append(id);
  const chip = make("span", "chip", "Running");
  header.append(title, chip);
  const steps = make("ol", "steps");
  card.append(header, steps);
  const view = { card, steps, chip };
  runs.set(event.run_id, view);
  appendToTimeline(card);
  return view;
}

/** One event as a step of its run's card (a new card for a run not seen yet). */
export function renderEvent(event: AgentEvent): void {
  const view = runView(event);
  const step = STEP[event.type] ?? { label: event.type, glyph: "•" };
  const item = make("li", `step step-${event.type}`);
  item.dataset.testid = "event";
  item.dataset.type = event.type;
  item.dataset.seq = String(event.seq);
  const body = make("div", "step-body");
  const head = make("div", "step-head");
  head.append(make("span", "step-label", step.label), make("span", "seq", `seq ${event.seq}`), make("time", "step-time", clock(new Date(event.ts))));
  body.append(head);
  const detail = describeEvent(event);
  if (detail) body.append(make("div", "step-detail", detail));
  item.append(make("span", "step-icon", step.glyph), body);
  view.steps.append(item);

  if (event.type === "agent_completed") setRunState(view, "completed", "Completed");
  else if (event.type === "agent_error") setRunState(view, "failed", String(event.data.error ?? "") === "INTERRUPTED" ? "Interrupted" : "Failed");
  const atBottom = ui.timeline.scrollHeight - ui.timeline.scrollTop - ui.timeline.clientHeight < 160;
  if (atBottom) ui.timeline.scrollTop = ui.timeline.scrollHeight;
}

function setRunState(view: RunView, state: string, label: string): void {
  view.card.dataset.state = state;
  view.chip.textContent = label;
}

function describeEvent(event: AgentEvent): string {
  const d = event.data;
  const text = (v: unknown) => (typeof v === "string" ? v : v === undefined ? "" : JSON.stringify(v));
  switch (event.type) {
    case "agent_started":
      return d.input === undefined ? text(d.agent) : `“${text(d.input)}”`;
    case "agent_thinking":
      return text(d.text);
    case "tool_executing":
      return text(d.tool);
    case "tool_completed":
      return `${text(d.tool)}${typeof d.duration_ms === "number" ? ` · ${d.duration_ms} ms` : ""}`;
    case "agent_completed":
      return text(d.text);
    case "agent_error":
      return text(d.message ?? d.error);
    default:
      return "";
  }
}

/** Empties the timeline; the bubbles of `keep` (messages not yet acked) stay. */
export function clearTimeline(keep: readonly string[] = []): void {
  for (const view of runs.values()) view.card.remove();
  for (const [id, bubble] of bubbles) if (!keep.includes(id)) (bubble.remove(), bubbles.delete(id));
  for (const note of ui.timeline.querySelectorAll(".note")) note.remove();
  runs.clear();
  ui.empty.hidden = bubbles.size > 0;
}

/**
 * After resync_required the gateway no longer has the events behind what the
 * page shows (a dev gateway restarted without its history, a store that lost
 * its data), and seqs may start again at 1: the page has no other source to
 * reload from, so it starts its timeline again rather than show two seq 1s.
 * A run still going loses its earlier steps from view; whether it goes on is
 * up to its backend (the example agent does: its later steps arrive as a new
 * card, never a card left "Running"), so the note says only that, once.
 * `pendingMessageIds`: the bubbles that stay (messages not yet acked).
 */
export function reloadTimeline(latestSeq: number | undefined, pendingMessageIds: readonly string[]): void {
  const cut = [...runs.values()].filter((view) => view.card.dataset.state === "running").length;
  clearTimeline(pendingMessageIds);
  const from = latestSeq === undefined ? "with the next event" : `from seq ${latestSeq + 1}`;
  const inProgress = cut === 0 ? "" : cut === 1 ? ", and the run in progress shows only its steps from here on" : `, and ${cut} runs in progress show only their steps from here on`;
  addNote(`The gateway no longer has the earlier events, so the timeline starts again ${from}${inProgress}.`);
}
