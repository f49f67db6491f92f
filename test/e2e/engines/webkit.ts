/**
 * WebKitGTK's MiniBrowser, driven by Debian's WebKitWebDriver through plain
 * W3C WebDriver over HTTP (fetch; no client library), on an Xvfb display.
 * The harness starts Xvfb (it picks a free display: -displayfd) and
 * WebKitWebDriver on a free port, and stops both by PID. WebKitWebDriver
 * holds one session at a time; each page is a session (a MiniBrowser of its
 * own, with a fresh ephemeral profile). Tabs are the windows of one more
 * session, so that they share one profile (BroadcastChannel, Web Locks).
 */
import { freePort } from "../../support/ports.js";
import { requireBinary, spawnTracked, waitUntil, type Tracked } from "./processes.js";
import type { EngineBrowser, EnginePage, EngineTab } from "./types.js";

const DRIVER = process.env.WEBKIT_DRIVER_BIN ?? "/usr/bin/WebKitWebDriver";
const XVFB = process.env.XVFB_BIN ?? "/usr/bin/Xvfb";
// Found with `dpkg -L libwebkit2gtk-4.1-0 | grep MiniBrowser`.
const MINIBROWSER = process.env.MINIBROWSER_BIN ?? "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";
const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";

export async function launchWebKit(): Promise<EngineBrowser> {
  requireBinary(DRIVER, "webkit2gtk-driver");
  requireBinary(MINIBROWSER, "libwebkit2gtk-4.1-0");
  requireBinary(XVFB, "xvfb");
  const xvfb = spawnTracked(XVFB, ["-displayfd", "1", "-screen", "0", "1280x900x24", "-nolisten", "tcp"]);
  let driver: Tracked | undefined;
  try {
    const display = await waitUntil("Xvfb's display number", xvfb, async () => /^(\d+)\s*$/m.exec(xvfb.output())?.[1]);
    const port = await freePort();
    driver = spawnTracked(DRIVER, [`--port=${port}`], { ...process.env, DISPLAY: `:${display}` });
    const base = `http://127.0.0.1:${port}`;
    await waitUntil("WebKitWebDriver", driver, async () => ((await fetch(`${base}/status`)).ok ? true : undefined));
    const started = driver;
    const tabs = windowTabs(base);
    return {
      name: "webkit",
      pageErrors: [],
      newPage: () => openSession(base),
      newTab: (url) => tabs.newTab(url),
      async close() {
        await tabs.close().catch(() => undefined);
        await started.stop();
        await xvfb.stop();
      },
    };
  } catch (err) {
    await driver?.stop();
    await xvfb.stop();
    throw err;
  }
}

type Command = <T>(method: string, path: string, body?: unknown) => Promise<T>;

/** A new session (a MiniBrowser of its own); resolves its command function. */
async function newSession(base: string): Promise<{ id: string; command: Command }> {
  const created = await webdriver<{ sessionId: string }>(base, "POST", "/session", {
    capabilities: { alwaysMatch: { "webkitgtk:browserOptions": { binary: MINIBROWSER, args: ["--automation"] } } },
  });
  const session = `/session/${created.sessionId}`;
  return { id: created.sessionId, command: <T>(method: string, path: string, body?: unknown) => webdriver<T>(base, method, `${session}${path}`, body) };
}

/** Runs `source` in the session's current window: execute/async, whose last argument is the callback; a rejection comes back as a value, then thrown here. */
async function executeAsync<T>(command: Command, source: string): Promise<T> {
  const script = `const done = arguments[arguments.length - 1];
    Promise.resolve().then(() => (${source})).then((value) => done({ ok: value === undefined ? null : value }), (e) => done({ error: String(e && e.stack || e) }));`;
  const result = await command<{ ok?: T; error?: string }>("POST", "/execute/async", { script, args: [] });
  if (result.error !== undefined) throw new Error(`in the page: ${result.error}`);
  return result.ok as T;
}

async function openSession(base: string): Promise<EnginePage> {
  const { command } = await newSession(base);
  const find = async (selector: string) => (await command<Record<string, string>>("POST", "/element", { using: "css selector", value: selector }))[ELEMENT]!;
  await command("POST", "/window/rect", { width: 1280, height: 860 }).catch(() => undefined);
  return {
    goto: async (url) => void (await command("POST", "/url", { url })),
    evaluate: <T>(source: string) => executeAsync<T>(command, source),
    async fill(selector, text) {
      await command("POST", `/element/${await find(selector)}/value`, { text });
    },
    async click(selector) {
      await command("POST", `/element/${await find(selector)}/click`, {});
    },
    screenshot: async () => Buffer.from(await command<string>("GET", "/screenshot"), "base64"),
    close: async () => void (await command("DELETE", "")),
  };
}

/**
 * Tabs as the windows of one session (created with the first tab): W3C
 * WebDriver's new window (POST /window/new), switched to (POST /window) before
 * each command, closed with DELETE /window. The driver works on one current
 * window at a time, so the tabs' commands run in turn, each after a switch.
 */
function windowTabs(base: string): { newTab(url: string): Promise<EngineTab>; close(): Promise<void> } {
  let session: { id: string; command: Command } | undefined;
  let current: string | undefined;
  const open = new Set<string>();
  let queue: Promise<unknown> = Promise.resolve();
  const inTurn = <T>(step: () => Promise<T>): Promise<T> => {
    const run = queue.then(step, step);
    queue = run.catch(() => undefined);
    return run;
  };
  const command: Command = (method, path, body) => session!.command(method, path, body);
  const focus = async (handle: string) => {
    if (current === handle) return;
    await command("POST", "/window", { handle });
    current = handle;
  };
  const closeTab = async (handle: string) => {
    if (!open.delete(handle)) return;
    await focus(handle);
    await command("DELETE", "/window"); // closing the last window ends the session (W3C)
    current = undefined;
    if (open.size === 0) session = undefined;
  };
  const tab = (handle: string): EngineTab => ({
    evaluate: <T>(source: string) => inTurn(async () => (await focus(handle), executeAsync<T>(command, source))),
    close: () => inTurn(() => closeTab(handle)),
  });
  return {
    newTab: (url) =>
      inTurn(async () => {
        let handle: string;
        if (session === undefined) {
          session = await newSession(base);
          handle = current = await command<string>("GET", "/window");
        } else {
          handle = (await command<{ handle: string }>("POST", "/window/new", { type: "window" })).handle;
          await focus(handle);
        }
        open.add(handle);
        await command("POST", "/url", { url });
        return tab(handle);
      }),
    close: () =>
      inTurn(async () => {
        const ending = session;
        session = undefined;
        open.clear();
        if (ending) await ending.command("DELETE", "").catch(() => undefined);
      }),
  };
}

/** One W3C WebDriver command: its `value`, or an Error with the driver's error and message. */
async function webdriver<T>(base: string, method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = (await response.json()) as { value: T & { error?: string; message?: string } };
  if (!response.ok) throw new Error(`WebDriver ${method} ${path}: ${payload.value?.error}: ${payload.value?.message}`);
  return payload.value;
}
