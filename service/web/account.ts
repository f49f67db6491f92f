/**
 * The user's side of signing in: the form, the rule for a user id, and the
 * token. The dev stand-in plays the app's "auth service" (POST /dev/sign-in);
 * the page keeps the token and hands it to the SDK when asked.
 */
import { ui } from "./dom.js";

const TOKEN_RENEW_MARGIN_MS = 60_000;

interface Session {
  readonly userId: string;
  token: string;
  expiresAt: number;
}

let session: Session | undefined;

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
export async function getToken({ forceRefresh }: { forceRefresh: boolean }): Promise<string> {
  const current = session;
  if (!current) throw new Error("signed out");
  if (forceRefresh || current.expiresAt - Date.now() < TOKEN_RENEW_MARGIN_MS) {
    const fresh = await requestToken(current.userId);
    current.token = fresh.token;
    current.expiresAt = fresh.expiresAt;
  }
  return current.token;
}

/**
 * Gets a token for `userId` and makes it the session; `onUserChange` runs
 * first when it replaces another user's. False (and the reason under the
 * form) when the stand-in refused.
 */
export async function startSession(userId: string, onUserChange: () => void): Promise<boolean> {
  ui.signInButton.disabled = true;
  ui.signInError.hidden = true;
  try {
    const { token, expiresAt } = await requestToken(userId);
    if (session && session.userId !== userId) onUserChange();
    session = { userId, token, expiresAt };
    localStorage.setItem("demo.userId", userId);
    return true;
  } catch (err) {
    showSignInError(err instanceof Error ? err.message : String(err));
    return false;
  } finally {
    ui.signInButton.disabled = false;
  }
}

export function endSession(): void {
  session = undefined;
}

export function showSignInError(text: string): void {
  ui.signInError.textContent = text;
  ui.signInError.hidden = false;
}

/** What is wrong with a user id, in the words of the rule under the field (the stand-in's USER_ID pattern); undefined when nothing. */
export function userIdProblem(userId: string): string | undefined {
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

export function showSignedIn(userId: string): void {
  ui.signInForm.hidden = true;
  ui.signedIn.hidden = false;
  ui.who.textContent = userId;
  ui.avatar.textContent = userId.slice(0, 1).toUpperCase();
  ui.message.disabled = false;
  ui.message.placeholder = "Ask the assistant something…";
  updateSendButton();
  ui.message.focus();
}

export function showSignedOut(): void {
  ui.signInForm.hidden = false;
  ui.signedIn.hidden = true;
  ui.message.disabled = true;
  ui.message.placeholder = "Sign in to chat";
  updateSendButton();
}

/** Send is enabled when there is something to send and the composer is open (signed in). */
export function updateSendButton(): void {
  ui.send.disabled = ui.message.disabled || ui.message.value.trim() === "";
}
