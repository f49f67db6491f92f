/**
 * The demo chat page. It plays the app around the SDK: it signs in through
 * the dev stand-in (its "auth service"), keeps the user's token, and renders
 * what the GatewayClient reports. Every string from the network is put on
 * the page with textContent, never as HTML.
 *
 * This module wires the page: the client's lifecycle and its events. The
 * rest is by concern: account.ts (sign-in form, token), timeline.ts (runs,
 * bubbles, notes), connectionStatus.ts (status line, notice, log, facts),
 * dom.ts (the elements).
 *
 * `../client/index.js` is the SDK; the dev server bundles this file with that
 * import pointing at /gateway-client.js, the distributable bundle (and
 * `../client/tabs/index.js` at /gateway-client-tabs.js).
 *
 * `?share=1` turns on one socket per browser: the page's tabs share the
 * leader tab's connection (`?share=1&locks=0`: elected without Web Locks).
 */
import { GatewayClient } from "../client/index.js";
import { SharedGatewayClient, type ChatClient } from "../client/tabs/index.js";
import { endSession, getToken, showSignedIn, showSignedOut, showSignInError, startSession, updateSendButton, userIdProblem } from "./account.js";
import { hideNotice, logStateChange, logText, renderFacts, renderStatus, showStopNotice } from "./connectionStatus.js";
import { ui } from "./dom.js";
import { addBubble, addNote, clearTimeline, markBubble, reloadTimeline, renderEvent } from "./timeline.js";

const THREAD_ID = "web-demo";

let gatewayUrl = "";
let client: ChatClient | undefined;
const query = new URLSearchParams(location.search);
const SHARE_ACROSS_TABS = query.get("share") === "1";
/** Where each user's stream stood, so signing in again resumes instead of starting over. */
const positions = new Map<string, { lastSeq: number | undefined; epoch: string | undefined }>();

async function signIn(userId: string): Promise<void> {
  if (!(await startSession(userId, () => clearTimeline()))) return;
  hideNotice();
  showSignedIn(userId);
  startClient(userId);
}

function signOut(): void {
  stopClient();
  endSession();
  showSignedOut();
  renderStatus({ state: "closed", errorCode: "CLOSED_BY_APP", reason: "signed out" });
}

function createClient(userId: string): ChatClient {
  const position = positions.get(userId);
  const options = { url: gatewayUrl, getToken, lastSeq: position?.lastSeq, epoch: position?.epoch };
  // Shared by the tabs of this user; the key keeps another user's tabs (and token) apart.
  // data-tab says which tab holds the socket (for a person, and for the multi-tab tests).
  const onRoleChange = (leader: boolean) => (ui.status.dataset.tab = leader ? "leader" : "follower");
  const share = { key: userId, onRoleChange, ...(query.get("locks") === "0" ? { locks: null } : {}) };
  ui.status.dataset.tab = SHARE_ACROSS_TABS ? "follower" : "own";
  return SHARE_ACROSS_TABS ? new SharedGatewayClient({ ...options, share }) : new GatewayClient(options);
}

function startClient(userId: string): void {
  stopClient();
  const c = (client = createClient(userId));
  const savePosition = () => positions.set(userId, { lastSeq: c.lastSeq, epoch: c.epoch });
  c.on("state", (change) => {
    renderStatus(change);
    logStateChange(change);
    renderFacts(client);
    if (change.state === "open") hideNotice();
    // A "stop" close (revoked, forbidden origin) ends this sign-in: say why, and offer the form again.
    if (change.state === "closed" && change.errorCode !== "CLOSED_BY_APP") {
      showStopNotice(change);
      showSignedOut();
    }
  });
  c.on("event", (event) => {
    renderEvent(event);
    savePosition();
    renderFacts(client);
  });
  c.on("resync", (resync) => {
    reloadTimeline(resync.latestSeq, client?.pendingMessageIds ?? []);
    savePosition();
    renderFacts(client);
  });
  c.on("ack", (ack) => {
    markBubble(ack.messageId, "delivered", "Delivered");
    renderFacts(client);
  });
  c.on("error", (error) => {
    if (error.messageId) markBubble(error.messageId, "queued", "Not accepted yet, retrying…");
    if (!error.fatal) logText(`error ${error.code}: ${error.message}`);
  });
  c.connect();
  renderFacts(client);
}

function stopClient(): void {
  client?.close();
  client = undefined;
}

function sendMessage(): void {
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
  renderFacts(client);
}

ui.signInForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const userId = ui.userId.value.trim();
  const problem = userIdProblem(userId);
  if (problem === undefined) return void signIn(userId);
  showSignInError(problem);
});
ui.signOut.addEventListener("click", signOut);
ui.message.addEventListener("input", updateSendButton);
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});

async function main(): Promise<void> {
  const response = await fetch("/config.json");
  gatewayUrl = ((await response.json()) as { gatewayUrl: string }).gatewayUrl;
  ui.userId.value = localStorage.getItem("demo.userId") ?? "";
  // Enabled only now: a client needs the gateway's URL.
  ui.signInButton.disabled = false;
}

void main();
