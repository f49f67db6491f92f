/**
 * The demo page as the scenarios see it, in any engine: what a person does
 * (type, click) through the engine's real input, and what the page shows,
 * read through small scripts. Waiting is polling, the same in every engine.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { call, type EnginePage } from "./engines/index.js";
import { instrumentPage, pageRecord, type PageRecord } from "./engines/instrument.js";
import { ARTIFACTS } from "./harness.js";

const POLL_MS = 100;

export class DemoPage {
  constructor(
    readonly page: EnginePage,
    readonly engine: string,
  ) {}

  /** Loads the page and starts recording its traffic; `stallFirstTicketSocketMs` holds back its first ticket socket. */
  async open(url: string, options: { stallFirstTicketSocketMs?: number } = {}): Promise<void> {
    await this.page.goto(url);
    await this.waitFor("the page's script", () => !(document.querySelector('[data-testid="sign-in"]') as HTMLButtonElement | null)?.disabled);
    await call(this.page, instrumentPage, options);
  }

  async signIn(userId: string): Promise<void> {
    await call(this.page, () => void ((document.querySelector('[data-testid="user-id"]') as HTMLInputElement).value = ""));
    await this.page.fill('[data-testid="user-id"]', userId);
    await this.page.click('[data-testid="sign-in"]');
  }

  async send(text: string): Promise<void> {
    await this.page.fill('[data-testid="message"]', text);
    await this.page.click('[data-testid="send"]');
  }

  /** Polls `check` in the page until it returns true, or fails naming `what`. */
  async waitFor<A extends unknown[]>(what: string, check: (...args: A) => boolean, args?: A, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await call(this.page, check, ...((args ?? []) as A))) return;
      if (Date.now() > deadline) throw new Error(`${this.engine}: timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  waitForSelector(selector: string, timeoutMs = 10_000): Promise<void> {
    return this.waitFor(selector, (s: string) => document.querySelector(s) !== null, [selector], timeoutMs);
  }

  count(selector: string): Promise<number> {
    return call(this.page, (s: string) => document.querySelectorAll(s).length, selector);
  }

  /** The text of the first element matching `selector` (null: none). */
  text(selector: string): Promise<string | null> {
    return call(this.page, (s: string) => document.querySelector(s)?.textContent ?? null, selector);
  }

  attribute(selector: string, name: string, nth: "first" | "last" = "first"): Promise<string | null> {
    return call(
      this.page,
      (s: string, n: string, which: string) => {
        const all = document.querySelectorAll(s);
        return all[which === "last" ? all.length - 1 : 0]?.getAttribute(n) ?? null;
      },
      selector,
      name,
      nth,
    );
  }

  /** The seqs of the event elements on the page, in document order. */
  seqs(): Promise<number[]> {
    return call(this.page, () => [...document.querySelectorAll('[data-testid="event"]')].map((n) => Number((n as HTMLElement).dataset.seq)));
  }

  /** What instrument.ts recorded: ticket requests, sockets, closes, uncaught errors. */
  record(): Promise<PageRecord> {
    return call(this.page, pageRecord);
  }

  async screenshot(name: string): Promise<string> {
    await mkdir(ARTIFACTS, { recursive: true });
    const path = join(ARTIFACTS, `${this.engine}-${name}.png`);
    await writeFile(path, await this.page.screenshot());
    return path;
  }

  close(): Promise<void> {
    return this.page.close();
  }
}
