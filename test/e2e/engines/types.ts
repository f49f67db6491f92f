/**
 * What the e2e scenarios need of a browser, and nothing more, so that one set
 * of scenarios runs in Chromium (CDP, playwright-core), Firefox (WebDriver
 * BiDi, puppeteer-core) and WebKit (W3C WebDriver over HTTP, WebKitWebDriver).
 */
export type EngineName = "chromium" | "firefox" | "webkit";

export interface EnginePage {
  goto(url: string): Promise<void>;
  /**
   * Runs `source`, a JavaScript expression, in the page and resolves its
   * (awaited) value, which must survive JSON.
   */
  evaluate<T>(source: string): Promise<T>;
  /** Types into the element: real key events, as a person would. */
  fill(selector: string, text: string): Promise<void>;
  click(selector: string): Promise<void>;
  /** A PNG of the page as it is now. */
  screenshot(): Promise<Uint8Array>;
  close(): Promise<void>;
}

/**
 * A tab of the browser's one profile: the tabs of one browser share
 * BroadcastChannel and Web Locks, as the tabs of a person's browser do (the
 * multi-tab scenarios need exactly that).
 */
export interface EngineTab {
  /** As EnginePage.evaluate; a tab's scripts must not block (WebKit's driver runs one command at a time for all tabs). */
  evaluate<T>(source: string): Promise<T>;
  /** Closes the tab as a person does (its pagehide handlers run); resolves once it is gone. */
  close(): Promise<void>;
}

export interface EngineBrowser {
  readonly name: EngineName;
  /** Uncaught errors of the pages, as the engine's protocol reports them (WebKit's has none: see instrument.ts). */
  readonly pageErrors: string[];
  newPage(): Promise<EnginePage>;
  /** Opens `url` in a new tab of the one profile and resolves once it has loaded. */
  newTab(url: string): Promise<EngineTab>;
  /** Closes the browser and stops every process the harness started for it, by PID. */
  close(): Promise<void>;
}

/** Runs `fn` in the page with JSON arguments: the one way the scenarios reach into a page. */
export function call<A extends unknown[], T>(page: EnginePage, fn: (...args: A) => T | Promise<T>, ...args: A): Promise<Awaited<T>> {
  return page.evaluate<Awaited<T>>(`(${fn.toString()})(...${JSON.stringify(args)})`);
}
