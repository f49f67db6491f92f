/**
 * Debian's Firefox ESR, driven by puppeteer-core over WebDriver BiDi. Puppeteer
 * starts it (it writes the automation preferences into the profile) with the
 * remote agent on a port picked free here; the harness stops it by PID.
 */
import puppeteer, { type Page } from "puppeteer-core";
import { freePort } from "../../support/ports.js";
import { requireBinary, signal } from "./processes.js";
import type { EngineBrowser, EnginePage, EngineTab } from "./types.js";

const FIREFOX = process.env.FIREFOX_BIN ?? "/usr/bin/firefox-esr";

/**
 * Through BiDi, Firefox reports its own network console messages (a refused
 * CORS request, a WebSocket it could not open) like a page's uncaught errors.
 * They are the browser's comments on traffic the scenarios cause on purpose,
 * not errors of the page's script.
 */
// Seen: "Cross-Origin Request Blocked: … (Reason: CORS request did not succeed)", "Firefox can’t establish a
// connection to the server at ws://…/ws." (the SDK's attempts while the gateway restarts, its origin probe).
const NETWORK_CONSOLE = [/^Cross-Origin Request Blocked: /, /^Firefox can.t establish a connection to the server at wss?:\/\//];

export async function launchFirefox(): Promise<EngineBrowser> {
  requireBinary(FIREFOX, "firefox-esr");
  const port = await freePort();
  const browser = await puppeteer.launch({
    browser: "firefox",
    protocol: "webDriverBiDi",
    executablePath: FIREFOX,
    headless: true,
    args: [`--remote-debugging-port=${port}`],
    defaultViewport: { width: 1280, height: 860 },
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  const pid = browser.process()?.pid;
  const pageErrors: string[] = [];
  const watchedPage = async () => {
    const page = await browser.newPage();
    page.on("pageerror", (err) => {
      const message = err instanceof Error ? err.message : String(err);
      if (!NETWORK_CONSOLE.some((pattern) => pattern.test(message))) pageErrors.push(message);
    });
    return page;
  };
  return {
    name: "firefox",
    pageErrors,
    async newPage() {
      return puppeteerPage(await watchedPage());
    },
    async newTab(url) {
      const page = await watchedPage();
      await page.goto(url);
      return puppeteerTab(page);
    },
    async close() {
      await Promise.race([browser.close(), new Promise((resolve) => setTimeout(resolve, 5000))]).catch(() => undefined);
      // Stopped by its PID if the BiDi session could not close it.
      if (pid !== undefined && isAlive(pid)) signal(pid, "SIGKILL");
    },
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function puppeteerPage(page: Page): EnginePage {
  return {
    goto: async (url) => void (await page.goto(url)),
    evaluate: <T>(source: string) => page.evaluate(source) as Promise<T>,
    fill: (selector, text) => page.type(selector, text),
    click: (selector) => page.click(selector),
    screenshot: () => page.screenshot({ fullPage: true }),
    close: () => page.close(),
  };
}

function puppeteerTab(page: Page): EngineTab {
  return {
    evaluate: <T>(source: string) => page.evaluate(source) as Promise<T>,
    // As a person closes a tab: through BiDi with promptUnload, so the page's unload steps (pagehide) run.
    async close() {
      if (page.isClosed()) return;
      const closed = new Promise((resolve) => page.once("close", resolve));
      await page.close({ runBeforeUnload: true });
      await closed;
    },
  };
}
