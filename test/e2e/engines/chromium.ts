/**
 * Debian's Chromium, started by the harness with the DevTools protocol on a
 * free port, driven by playwright-core over CDP, stopped by PID.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Page } from "playwright-core";
import { freePort } from "../../support/ports.js";
import { removeProfile, requireBinary, spawnTracked, waitUntil } from "./processes.js";
import type { EngineBrowser, EnginePage, EngineTab } from "./types.js";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
  "--window-size=1280,860",
];

export async function launchChromium(): Promise<EngineBrowser> {
  requireBinary(CHROMIUM, "chromium");
  const profile = await mkdtemp(join(tmpdir(), "gw-chromium-"));
  const port = await freePort();
  const proc = spawnTracked(CHROMIUM, [...ARGS, `--remote-debugging-port=${port}`, "--remote-debugging-address=127.0.0.1", `--user-data-dir=${profile}`, "about:blank"]);
  try {
    await waitUntil("chromium's DevTools endpoint", proc, async () => ((await fetch(`http://127.0.0.1:${port}/json/version`)).ok ? true : undefined));
    const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`);
    const context = browser.contexts()[0] ?? (await browser.newContext());
    const pageErrors: string[] = [];
    return {
      name: "chromium",
      pageErrors,
      async newPage() {
        const page = await context.newPage();
        await page.setViewportSize({ width: 1280, height: 860 });
        page.on("pageerror", (err) => pageErrors.push(err.message));
        return playwrightPage(page);
      },
      async newTab(url) {
        const page = await context.newPage();
        page.on("pageerror", (err) => pageErrors.push(err.message));
        await page.goto(url);
        return playwrightTab(page);
      },
      async close() {
        await browser.close().catch(() => undefined);
        await proc.stop();
        await removeProfile(profile);
      },
    };
  } catch (err) {
    await proc.stop();
    await removeProfile(profile);
    throw err;
  }
}

function playwrightPage(page: Page): EnginePage {
  return {
    goto: async (url) => void (await page.goto(url)),
    evaluate: (source) => page.evaluate(source),
    fill: (selector, text) => page.locator(selector).pressSequentially(text).then(() => undefined),
    click: (selector) => page.click(selector),
    screenshot: () => page.screenshot({ fullPage: true }),
    close: () => page.close(),
  };
}

function playwrightTab(page: Page): EngineTab {
  return {
    evaluate: (source) => page.evaluate(source),
    // As a person closes a tab: its pagehide handlers run (playwright skips them by default).
    async close() {
      if (page.isClosed()) return;
      const closed = new Promise((resolve) => page.once("close", resolve));
      await page.close({ runBeforeUnload: true });
      await closed;
    },
  };
}
