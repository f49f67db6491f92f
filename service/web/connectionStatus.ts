/**
 * What the page says about the connection: the status line in the top bar,
 * the notice when the client stopped for good, the connection log and the
 * facts (last seq, queued messages, epoch).
 */
import type { ChatClient } from "../client/tabs/index.js";
import type { ConnectionState, StateChange } from "../client/index.js";
import { clock, make, ui } from "./dom.js";

const LOG_LIMIT = 60;

const STATE_LABEL: Record<ConnectionState, string> = {
  connecting: "Connecting",
  open: "Connected",
  reconnecting: "Reconnecting",
  closed: "Not connected",
};

/** Why the client stopped, per error code, in words a person can act on: [title, text]. */
const STOP_NOTICE: Partial<Record<string, readonly [string, string]>> = {
  SESSION_REVOKED: ["You were signed out", "Your session was revoked, so the connection was closed and will not reopen by itself. Sign in again to continue."],
  MESSAGE_TOO_BIG: ["Connection closed", "A message was larger than the gateway accepts. The client stopped; reload the page."],
  UNSUPPORTED_DATA: ["Connection closed", "The gateway refused data the client sent. The client stopped; reload the page."],
};

export function renderStatus(change: StateChange): void {
  ui.status.dataset.state = change.state;
  ui.status.dataset.code = change.errorCode;
  const label = change.state === "closed" && change.errorCode !== "CLOSED_BY_APP" ? "Stopped" : STATE_LABEL[change.state];
  const retry = change.retryInMs === undefined ? "" : ` (retry in ${(change.retryInMs / 1000).toFixed(1)} s)`;
  ui.statusText.textContent = change.state === "open" ? label : `${label} · ${change.reason}${retry}`;
}

/** Why the client stopped for good, and what a person can do about it. */
export function showStopNotice(change: StateChange): void {
  const originForbidden = [
    "This page may not connect to the gateway",
    `The gateway does not allow the origin ${location.origin}, so the client stopped trying. Add it to ALLOWED_ORIGINS, or open the page from an allowed origin.`,
  ] as const;
  const [title, body] = change.errorCode === "ORIGIN_FORBIDDEN" ? originForbidden : (STOP_NOTICE[change.errorCode] ?? ["Connection closed", change.reason]);
  ui.noticeTitle.textContent = title;
  ui.noticeText.textContent = body;
  ui.notice.dataset.code = change.errorCode;
  ui.notice.hidden = false;
}

export function hideNotice(): void {
  ui.notice.hidden = true;
}

export function logStateChange(change: StateChange): void {
  const retry = change.retryInMs === undefined ? "" : ` · retry in ${(change.retryInMs / 1000).toFixed(1)} s`;
  const code = change.code === undefined ? "" : ` (${change.code})`;
  logText(`${change.reason}${code}${retry}`, change.state);
}

/** A line at the top of the connection log; the log keeps the newest LOG_LIMIT lines. */
export function logText(text: string, state?: string): void {
  const item = make("li");
  if (state) item.dataset.state = state;
  item.append(make("time", "log-time", clock(new Date())), make("span", "log-text", text));
  ui.log.prepend(item);
  while (ui.log.children.length > LOG_LIMIT) ui.log.lastElementChild?.remove();
}

export function renderFacts(client: ChatClient | undefined): void {
  ui.factSeq.textContent = client?.lastSeq === undefined ? "–" : String(client.lastSeq);
  ui.factEpoch.textContent = client?.epoch ?? "–";
  ui.factQueued.textContent = String(client?.pendingMessageIds.length ?? 0);
}
