/**
 * The demo chat page. It plays the app around the SDK: it signs in through
 * the dev stand-in (its "auth service"), keeps the user's token, and renders
 * what the GatewayClient reports. Every string from the network is put on
 * the page with textContent, never as HTML.
 *
 * `../client/index.js` is the SDK; the dev server bundles this file with that
 * import pointing at /gateway-client.js, the distributable bundle (and
 * `../client/tabs/index.js` at /gateway-client-tabs.js).
 *
 * `?share=1` turns on one socket per browser: the page's tabs share the
 * leader tab's connection (`?share=1&locks=0`: elected without Web Locks).
 */
import { GatewayClient, type AgentEvent, type ConnectionState, type StateChange } from "../client/index.js";
import { SharedGatewayClient, type ChatClient } from "../client/tabs/index.js";

const THREAD_ID = "web-demo";
const LOG_LIMIT = 60;
const TOKEN_RENEW_MARGIN_MS = 60_000;

interface Session {
  readonly userId: string;
  token: string;
  expiresAt: number;
}

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

const STATE_LABEL: Record<ConnectionState, string> = {
  connecting: "Connecting",
  open: "Connected",
  reconnecting: "Reconnecting",
  closed: "Not connected",
};

function element<T extends HTMLElement>(selector: string): T {
  const found = document.querySelector<T>(selector);
  if (!found) throw new Error(`demo page: ${selector} is missing`);
  return found;
}

function make<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const ui = {
  status: element<HTMLElement>('[data-testid="status"]'),
  statusText: element<HTMLElement>(".status-text"),
  signInForm: element<HTMLFormElement>("#signin-form"),
  userId: element<HTMLInputElement>("#user-id"),
  signInButton: element<HTMLButtonElement>('[data-testid="sign-in"]'),
  signInError: element<HTMLElement>("#signin-error"),
  signedIn: element<HTMLElement>("#signed-in"),
  who: element<HTMLElement>("#who"),
  avatar: element<HTMLElement>("#avatar"),
  signOut: element<HTMLButtonElement>("#sign-out"),
  factSeq: element<HTMLElement>("#fact-seq"),
  factQueued: element<HTMLElement>("#fact-queued"),
  factEpoch: element<HTMLElement>("#fact-epoch"),
  log: element<HTMLOListElement>("#conn-log"),
  timeline: element<HTMLElement>("#timeline"),
  empty: element<HTMLElement>("#empty"),
  notice: element<HTMLElement>("#notice"),
  noticeTitle: element<HTMLElement>("#notice-title"),
  noticeText: element<HTMLElement>("#notice-text"),
  composer: element<HTMLFormElement>("#composer"),
  message: element<HTMLInputElement>("#message"),
  send: element<HTMLButtonElement>('[data-testid="send"]'),
};

let gatewayUrl = "";
let session: Session | undefined;
let client: ChatClient | undefined;
const query = new URLSearchParams(location.search);
const SHARE_ACROSS_TABS = query.get("share") === "1";
/** Where each user's stream stood, so signing in again resumes instead of starting over. */
const positions = new Map<string, { lastSeq: number | undefined; epoch: string | undefined }>();
const runs = new Map<string, RunView>();
const bubbles = new Map<string, HTMLElement>();

// ── the "auth service" (the dev stand-in) ──

async function requestToken(userId: string): Promise<{ token: string; expiresAt: number }> {
  const response = await fetch("/dev/sign-in", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: userId }),
  });
  if (!response.ok) throw new Error(response.status === 400 ? "A user id is 1 to 64 letters, digits and . _ @ + - (no spaces)." : `Sign-in failed (HTTP ${response.status}).`);
  const body = (await response.json()) as { token: string; expires_at: string };
  return { token: body.token, expiresAt: Date.parse(body.expires_at) };
}

/** The SDK asks for the current token on every connection attempt; the page renews it when asked to, or when it is about to expire. */
async function getToken({ forceRefresh }: { forceRefresh: boolean }): Promise<string> {
  const current = session;
  if (!current) throw new Error("signed out");
  if (forceRefresh || current.expiresAt - Date.now() < TOKEN_RENEW_MARGIN_MS) {
    const fresh = await requestToken(current.userId);
    current.token = fresh.token;
    current.expiresAt = fresh.expiresAt;
  }
  return current.token;
}

// ── sign in / out ──

async function signIn(userId: string): Promise<void> {
  ui.signInButton.disabled = true;
  ui.signInError.hidden = true;
  try {
    const { token, expiresAt } = await requestToken(userId);
    if (session && session.userId !== userId) clearTimeline();
    session = { userId, token, expiresAt };
    localStorage.setItem("demo.userId", userId);
  } catch (err) {
    ui.signInError.textContent = err instanceof Error ? err.message : String(err);
    ui.signInError.hidden = false;
    return;
  } finally {
    ui.signInButton.disabled = false;
  }
  hideNotice();
  showSignedIn(userId);
  startClient(userId);
}

function startClient(userId: string): void {
  stopClient();
  const position = positions.get(userId);
  const options = { url: gatewayUrl, getToken, lastSeq: position?.lastSeq, epoch: position?.epoch };
  // Shared by the tabs of this user; the key keeps another user's tabs (and token) apart.
  // data-tab says which tab holds the socket (for a person, and for the multi-tab tests).
  const onRoleChange = (leader: boolean) => (ui.status.dataset.tab = leader ? "leader" : "follower");
  const share = { key: userId, onRoleChange, ...(query.get("locks") === "0" ? { locks: null } : {}) };
  ui.status.dataset.tab = SHARE_ACROSS_TABS ? "follower" : "own";
  const c: ChatClient = SHARE_ACROSS_TABS ? new SharedGatewayClient({ ...options, share }) : new GatewayClient(options);
  client = c;
  c.on("state", (change) => {
    renderStatus(change);
    logLine(change);
    renderFacts();
    if (change.state === "open") hideNotice();
    // A "stop" close (revoked, forbidden origin) ends this sign-in: say why, and offer the form again.
    if (change.state === "closed" && change.errorCode !== "CLOSED_BY_APP") {
      showStopNotice(change);
      showSignedOut();
    }
  });
  c.on("event", (event) => {
    renderEvent(event);
    positions.set(userId, { lastSeq: c.lastSeq, epoch: c.epoch });
    renderFacts();
  });
  c.on("resync", (resync) => {
    reloadTimeline(resync.latestSeq);
    positions.set(userId, { lastSeq: c.lastSeq, epoch: c.epoch });
    renderFacts();
  });
  c.on("ack", (ack) => {
    markBubble(ack.messageId, "delivered", "Delivered");
    renderFacts();
  });
  c.on("error", (error) => {
    if (error.messageId) markBubble(error.messageId, "queued", "Not accepted yet, retrying…");
    if (!error.fatal) logText(`error ${error.code}: ${error.message}`);
  });
  c.connect();
  renderFacts();
}

function stopClient(): void {
  client?.close();
  client = undefined;
}

function signOut(): void {
  stopClient();
  session = undefined;
  showSignedOut();
  renderStatus({ state: "closed", errorCode: "CLOSED_BY_APP", reason: "signed out" });
}

function showSignedIn(userId: string): void {
  ui.signInForm.hidden = true;
  ui.signedIn.hidden = false;
  ui.who.textContent = userId;
  ui.avatar.textContent = userId.slice(0, 1).toUpperCase();
  ui.message.disabled = false;
  ui.message.placeholder = "Ask the assistant something…";
  updateSendButton();
  ui.message.focus();
}

function showSignedOut(): void {
  ui.signInForm.hidden = false;
  ui.signedIn.hidden = true;
  ui.message.disabled = true;
  ui.message.placeholder = "Sign in to chat";
  updateSendButton();
}

// ── rendering ──

function renderStatus(change: StateChange): void {
  ui.status.dataset.state = change.state;
  ui.status.dataset.code = change.errorCode;
  const label = change.state === "closed" && change.errorCode !== "CLOSED_BY_APP" ? "Stopped" : STATE_LABEL[change.state];
  const retry = change.retryInMs === undefined ? "" : ` (retry in ${(change.retryInMs / 1000).toFixed(1)} s)`;
  ui.statusText.textContent = change.state === "open" ? label : `${label} · ${change.reason}${retry}`;
}

/** Why the client stopped for good, and what a person can do about it. */
function showStopNotice(change: StateChange): void {
  const text: Partial<Record<string, [string, string]>> = {
    ORIGIN_FORBIDDEN: [
      "This page may not connect to the gateway",
      `The gateway does not allow the origin ${location.origin}, so the client stopped trying. Add it to ALLOWED_ORIGINS, or open the page from an allowed origin.`,
    ],
    SESSION_REVOKED: ["You were signed out", "Your session was revoked, so the connection was closed and will not reopen by itself. Sign in again to continue."],
    MESSAGE_TOO_BIG: ["Connection closed", "A message was larger than the gateway accepts. The client stopped; reload the page."],
    UNSUPPORTED_DATA: ["Connection closed", "The gateway refused data the client sent. The client stopped; reload the page."],
  };
  const [title, body] = text[change.errorCode] ?? ["Connection closed", change.reason];
  ui.noticeTitle.textContent = title;
  ui.noticeText.textContent = body;
  ui.notice.dataset.code = change.errorCode;
  ui.notice.hidden = false;
}

function hideNotice(): void {
  ui.notice.hidden = true;
}

function logLine(change: StateChange): void {
  const retry = change.retryInMs === undefined ? "" : ` · retry in ${(change.retryInMs / 1000).toFixed(1)} s`;
  const code = change.code === undefined ? "" : ` (${change.code})`;
  logText(`${change.reason}${code}${retry}`, change.state);
}

function logText(text: string, state?: string): void {
  const item = make("li");
  if (state) item.dataset.state = state;
  item.append(make("time", "log-time", clock(new Date())), make("span", "log-text", text));
  ui.log.prepend(item);
  while (ui.log.children.length > LOG_LIMIT) ui.log.lastElementChild?.remove();
}

function renderFacts(): void {
  ui.factSeq.textContent = client?.lastSeq === undefined ? "–" : String(client.lastSeq);
  ui.factEpoch.textContent = client?.epoch ?? "–";
  ui.factQueued.textContent = String(client?.pendingMessageIds.length ?? 0);
}

function appendToTimeline(node: HTMLElement): void {
  ui.empty.hidden = true;
  const atBottom = ui.timeline.scrollHeight - ui.timeline.scrollTop - ui.timeline.clientHeight < 80;
  ui.timeline.append(node);
  if (atBottom) ui.timeline.scrollTop = ui.timeline.scrollHeight;
}

function addBubble(messageId: string, text: string, queued: boolean): void {
  const bubble = make("div", "bubble");
  bubble.dataset.testid = "chat-message";
  bubble.dataset.messageId = messageId;
  const meta = make("div", "bubble-meta", queued ? "Queued, sends when connected" : "Sending…");
  bubble.dataset.status = queued ? "queued" : "sending";
  bubble.append(make("div", "bubble-text", text), meta);
  bubbles.set(messageId, bubble);
  appendToTimeline(bubble);
}

function markBubble(messageId: string, status: string, text: string): void {
  const bubble = bubbles.get(messageId);
  if (!bubble) return;
  bubble.dataset.status = status;
  const meta = bubble.querySelector(".bubble-meta");
  if (meta) meta.textContent = text;
}

function addNote(text: string): void {
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

function renderEvent(event: AgentEvent): void {
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
function clearTimeline(keep: readonly string[] = []): void {
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
 */
function reloadTimeline(latestSeq: number | undefined): void {
  const cut = [...runs.values()].filter((view) => view.card.dataset.state === "running").length;
  clearTimeline(client?.pendingMessageIds ?? []);
  const from = latestSeq === undefined ? "with the next event" : `from seq ${latestSeq + 1}`;
  const inProgress = cut === 0 ? "" : cut === 1 ? ", and the run in progress shows only its steps from here on" : `, and ${cut} runs in progress show only their steps from here on`;
  addNote(`The gateway no longer has the earlier events, so the timeline starts again ${from}${inProgress}.`);
}

function clock(date: Date): string {
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

function updateSendButton(): void {
  ui.send.disabled = ui.message.disabled || ui.message.value.trim() === "";
}

// ── wiring ──

ui.signInForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const userId = ui.userId.value.trim();
  const problem = userIdProblem(userId);
  if (problem === undefined) return void signIn(userId);
  ui.signInError.textContent = problem;
  ui.signInError.hidden = false;
});

/** What is wrong with a user id, in the words of the rule under the field (the stand-in's USER_ID pattern); undefined when nothing. */
function userIdProblem(userId: string): string | undefined {
  if (userId === "") return "Enter a user id.";
  const length = [...userId].length;
  if (length > 64) return `That user id has ${length} characters; at most 64 are allowed.`;
  const bad = [...new Set([...userId].filter((ch) => !/[A-Za-z0-9._@+-]/.test(ch)))];
  if (bad.length > 0) {
    const shown = bad.map((ch) => (ch === " " ? "spaces" : `“${ch}”`)).join(", ");
    return `A user id may hold only letters A-Z and a-z, digits and . _ @ + -, not ${shown}.`;
  }
  return undefined;
}

ui.signOut.addEventListener("click", signOut);
ui.message.addEventListener("input", updateSendButton);

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (!client || text === "") return;
  let messageId: string;
  try {
    messageId = client.send(text, { threadId: THREAD_ID });
  } catch (err) {
    addNote(err instanceof Error ? err.message : String(err));
    return;
  }
  addBubble(messageId, text, client.state !== "open");
  ui.message.value = "";
  updateSendButton();
  renderFacts();
});

async function main(): Promise<void> {
  const response = await fetch("/config.json");
  gatewayUrl = ((await response.json()) as { gatewayUrl: string }).gatewayUrl;
  ui.userId.value = localStorage.getItem("demo.userId") ?? "";
  // Enabled only now: a client needs the gateway's URL.
  ui.signInButton.disabled = false;
}

void main();
