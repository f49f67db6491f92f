/**
 * The demo page's elements and the two helpers that build its nodes. Every
 * string from the network reaches the page through `make` (textContent),
 * never as HTML.
 */

function element<T extends HTMLElement>(selector: string): T {
  const found = document.querySelector<T>(selector);
  if (!found) throw new Error(`demo page: ${selector} is missing`);
  return found;
}

export function make<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A time of day as the page shows it (24 h, with seconds); "" for an invalid date. */
export function clock(date: Date): string {
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

/** The elements of index.html the script reads or writes (the e2e tests select the data-testid ones). */
export const ui = {
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
