/**
 * One socket per browser, in every engine (Chromium, Firefox, WebKit): tabs
 * of the demo page with `?share=1` against a real gateway and redis-server.
 * The gateway's own metrics count the sockets; every tab shows every event
 * once and in order; a follower's message is acked to that follower; closing
 * the leader's tab hands the socket to another tab without a hole, as does a
 * leader whose main thread hangs, and the election without Web Locks; the
 * takeover times are measured (written to the artifacts folder as
 * tabs-takeover.json).
 *
 * The scenarios drive tabs only through `Tab` (run a script in it, close it),
 * over each engine's `newTab` (engines/): tabs of one profile, so they share
 * BroadcastChannel and Web Locks as a person's tabs do.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DevSignIn } from "../../service/src/dev/signIn.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { launchEngine, type EngineBrowser, type EngineName, type EngineTab } from "./engines/index.js";
import { ARTIFACTS, freePort, publish, sleep, startGateway, startPage, type GatewayUnderTest } from "./harness.js";

/** What the scenario needs of a browser tab, whatever the engine. */
export interface Tab {
  /** Runs `fn(arg)` in the page and returns its (JSON-serialisable) result. */
  run<A, R>(fn: (arg: A) => R | Promise<R>, arg: A): Promise<R>;
  /** Closes the tab as a person would (its pagehide handlers run); resolves once it is gone. */
  close(): Promise<void>;
}

/** The engine's tab, recording the page's own uncaught errors once it has loaded (WebKit's driver reports none). */
async function openTab(browser: EngineBrowser, url: string): Promise<Tab> {
  const tab: EngineTab = await browser.newTab(url);
  await tab.evaluate(`(${recordErrors.toString()})()`);
  return {
    run: <A, R>(fn: (arg: A) => R | Promise<R>, arg: A) => tab.evaluate<R>(`(${fn.toString()})(${JSON.stringify(arg) ?? "undefined"})`),
    close: () => tab.close(),
  };
}

function recordErrors(): void {
  const w = window as typeof window & { __tabErrors?: string[] };
  if (w.__tabErrors) return;
  const errors: string[] = (w.__tabErrors = []);
  w.addEventListener("error", (e) => errors.push(String(e.message)));
  w.addEventListener("unhandledrejection", (e) => errors.push(`unhandled rejection: ${String(e.reason)}`));
}

const pageErrors = (tab: Tab) => tab.run(() => (window as typeof window & { __tabErrors?: string[] }).__tabErrors ?? [], undefined);

let redis: RedisServerHandle;
let gateway: GatewayUnderTest;
let stand: DevSignIn;

beforeAll(async () => {
  const pagePort = await freePort();
  redis = await startRedis();
  gateway = await startGateway({ redisUrl: redis.url, origins: [`http://127.0.0.1:${pagePort}`] });
  stand = await startPage(gateway, pagePort);
});
afterAll(async () => {
  await stand?.close();
  await gateway?.dispose();
  await redis?.stop();
});

/** gateway_ws_connections, read from the gateway's metrics listener. */
async function gatewaySockets(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gateway.running.app.metricsPort()}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("gateway_ws_connections"));
  return Number(line?.split(" ").pop());
}

/** Polls `check` until it returns a value other than undefined/false. */
async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// ── what the scenario reads and does in a tab (run in the page) ──

interface View {
  state: string | undefined;
  role: string | undefined;
  /** Seqs of each run's card, in the order the page appended them. */
  runs: number[][];
  /** Every seq on the page, ascending. */
  seqs: number[];
}

const view = (tab: Tab): Promise<View> =>
  tab.run(() => {
    const status = document.querySelector<HTMLElement>('[data-testid="status"]');
    const runs = [...document.querySelectorAll<HTMLElement>(".run")].map((run) =>
      [...run.querySelectorAll<HTMLElement>('[data-testid="event"]')].map((n) => Number(n.dataset.seq)),
    );
    return { state: status?.dataset.state, role: status?.dataset.tab, runs, seqs: runs.flat().sort((a, b) => a - b) };
  }, undefined);

/** Every seq from 1 to `last` exactly once, and each run's events in seq order (the page groups events by run). */
function expectOnceInOrder(v: View, last: number): void {
  expect(v.seqs).toEqual(range(1, last));
  for (const run of v.runs) expect(run).toEqual([...run].sort((a, b) => a - b));
}

const signIn = (tab: Tab, userId: string) =>
  tab.run(async (user) => {
    const input = document.querySelector<HTMLInputElement>('[data-testid="user-id"]')!;
    const button = document.querySelector<HTMLButtonElement>('[data-testid="sign-in"]')!;
    for (let i = 0; i < 200 && button.disabled; i++) await new Promise((r) => setTimeout(r, 25)); // the page loads its config first
    input.value = user;
    button.click();
  }, userId);

/** Types a message into the composer and sends it; returns the bubble's message id. */
const sendFrom = (tab: Tab, text: string) =>
  tab.run(async (message) => {
    const input = document.querySelector<HTMLInputElement>('[data-testid="message"]')!;
    input.value = message;
    input.dispatchEvent(new Event("input"));
    document.querySelector<HTMLButtonElement>('[data-testid="send"]')!.click();
    const bubble = [...document.querySelectorAll<HTMLElement>('[data-testid="chat-message"]')].at(-1)!;
    return bubble.dataset.messageId!;
  }, text);

const bubbleStatus = (tab: Tab, messageId: string) =>
  tab.run((id) => document.querySelector<HTMLElement>(`[data-testid="chat-message"][data-message-id="${id}"]`)?.dataset.status ?? null, messageId);

/** `count` tabs of the demo page at `query`, each signed in as `user`. */
const opened: Tab[] = [];
async function openTabs(browser: EngineBrowser, count: number, query: string, user: string): Promise<Tab[]> {
  const tabs: Tab[] = [];
  for (let i = 0; i < count; i++) {
    const tab = await openTab(browser, `${stand.url}/${query}`);
    opened.push(tab);
    await signIn(tab, user);
    tabs.push(tab);
  }
  return tabs;
}

const takeovers: Array<Record<string, unknown>> = [];

/** Milliseconds from `since` until one of `tabs` leads with an open socket. */
async function untilNewLeader(tabs: Tab[], since: number): Promise<number> {
  return until("a new leader, connected", async () => {
    const leader = (await Promise.all(tabs.map(view))).find((v) => v.role === "leader" && v.state === "open");
    return leader ? Date.now() - since : undefined;
  });
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The scenarios in `engine`'s browser, one browser for all of them; every tab is closed after each. */
function defineTabScenarios(engine: EngineName): void {
  let browser: EngineBrowser;
  beforeAll(async () => {
    browser = await launchEngine(engine);
  });
  afterEach(async () => {
    // A failed scenario must not leave its tabs (and their socket) to the next one.
    for (const tab of opened.splice(0)) await tab.close().catch(() => undefined);
    expect(browser.pageErrors.splice(0), "uncaught errors in the tabs").toEqual([]);
  });
  afterAll(async () => {
    await browser?.close();
  });

  it("share one socket; every tab sees every event once and in order; a follower's message is acked to it; closing the leader hands over without a hole", async () => {
    const user = `e2e-tabs-${engine}`;
    const tabs = await openTabs(browser, 5, "?share=1", user);
    const views = () => Promise.all(tabs.map(view));
    await until("every tab open", async () => (await views()).every((v) => v.state === "open"));
    const roles = (await views()).map((v) => v.role);
    expect(roles.filter((r) => r === "leader")).toHaveLength(1);
    expect(roles.filter((r) => r === "follower")).toHaveLength(4);
    expect(await until("one socket on the gateway", async () => (await gatewaySockets()) === 1)).toBe(true);

    for (let i = 1; i <= 5; i++) await publish(gateway, user, `event ${i}`);
    await until("five events in every tab", async () => (await views()).every((v) => v.seqs.length >= 5));
    for (const v of await views()) expectOnceInOrder(v, 5);

    // A follower sends; the leader's socket carries it; the ack reaches the follower's bubble.
    const follower = tabs[roles.indexOf("follower")]!;
    const messageId = await sendFrom(follower, "sent from a follower tab");
    await until("the follower's message delivered", async () => (await bubbleStatus(follower, messageId)) === "delivered");
    // The demo agent runs it once: six events (agent_started … agent_completed) in every tab, seqs 6..11.
    await until("the run's events in every tab", async () => (await views()).every((v) => v.seqs.length >= 11));
    for (const v of await views()) expectOnceInOrder(v, 11);

    // Close the leader's tab; an event published meanwhile must still reach every other tab.
    const leaderIndex = roles.indexOf("leader");
    const closedAt = Date.now();
    await tabs[leaderIndex]!.close();
    tabs.splice(leaderIndex, 1);
    await publish(gateway, user, "published while the leader's tab was closing");
    const takeoverMs = await untilNewLeader(tabs, closedAt);
    await publish(gateway, user, "after the takeover");
    await until("every event in the remaining tabs", async () => (await views()).every((v) => v.seqs.length >= 13));
    await sleep(300); // a late duplicate would show up by now
    for (const v of await views()) expectOnceInOrder(v, 13);
    expect((await views()).filter((v) => v.role === "leader")).toHaveLength(1);
    expect(await until("one socket on the gateway again", async () => (await gatewaySockets()) === 1)).toBe(true);

    takeovers.push({ engine, scenario: "leader tab closed", election: "Web Locks", tabs: 5, takeoverMs });
    expect(takeoverMs).toBeLessThan(10_000); // the 2 s target is reported, not timed here: a loaded machine must not fail it
    await expectNoPageErrors(tabs);
  });

  it("a hung leader (its main thread busy, no goodbye) loses the socket to a tab that steals the lock; free again, it follows", async () => {
    const user = `e2e-tabs-hung-${engine}`;
    const tabs = await openTabs(browser, 3, "?share=1", user);
    await until("every tab open", async () => (await Promise.all(tabs.map(view))).every((v) => v.state === "open"));
    for (let i = 1; i <= 3; i++) await publish(gateway, user, `event ${i}`);
    await until("three events in every tab", async () => (await Promise.all(tabs.map(view))).every((v) => v.seqs.length >= 3));
    const leader = tabs[(await Promise.all(tabs.map(view))).findIndex((v) => v.role === "leader")]!;
    const others = tabs.filter((t) => t !== leader);

    // A busy main thread: no timer, no message, no socket frame of the tab runs until it ends (and no freeze event warns).
    // Started from a timer, so the script that starts it returns at once: WebKit's driver, which runs one command at a
    // time for all tabs, would otherwise wait on it; the same in every engine.
    const hangMs = 9000;
    const hungAt = Date.now();
    await leader.run((ms) => {
      setTimeout(() => {
        const end = Date.now() + ms;
        while (Date.now() < end);
      }, 0);
    }, hangMs);
    await publish(gateway, user, "published while the leader hangs");
    const takeoverMs = await untilNewLeader(others, hungAt);
    await publish(gateway, user, "after the takeover");
    await until("five events in the other tabs", async () => (await Promise.all(others.map(view))).every((v) => v.seqs.length >= 5));
    expect(Date.now() - hungAt).toBeLessThan(hangMs); // all of this happened while the old leader was still stuck

    // The old leader's first script after the hang runs once its thread is free again.
    await until("the old leader follows", async () => (await view(leader)).role === "follower", hangMs + 15_000);
    await publish(gateway, user, "after the old leader resumed");
    await until("six events everywhere", async () => (await Promise.all(tabs.map(view))).every((v) => v.seqs.length >= 6));
    await sleep(300);
    for (const v of await Promise.all(tabs.map(view))) expectOnceInOrder(v, 6);
    expect(await until("one socket on the gateway", async () => (await gatewaySockets()) === 1)).toBe(true);
    takeovers.push({ engine, scenario: "leader hung: busy main thread (missed heartbeats, lock stolen)", election: "Web Locks", tabs: 3, takeoverMs });
    await expectNoPageErrors(tabs);
  });

  it("without Web Locks (?locks=0), heartbeats and claims elect one leader, and closing it hands over without a hole", async () => {
    const user = `e2e-tabs-nolocks-${engine}`;
    const tabs = await openTabs(browser, 3, "?share=1&locks=0", user);
    const views = () => Promise.all(tabs.map(view));
    await until("every tab open", async () => (await views()).every((v) => v.state === "open"));
    expect((await views()).filter((v) => v.role === "leader")).toHaveLength(1);
    for (let i = 1; i <= 3; i++) await publish(gateway, user, `event ${i}`);
    await until("three events in every tab", async () => (await views()).every((v) => v.seqs.length >= 3));

    const leaderIndex = (await views()).findIndex((v) => v.role === "leader");
    const closedAt = Date.now();
    await tabs[leaderIndex]!.close();
    tabs.splice(leaderIndex, 1);
    await publish(gateway, user, "published while the leader's tab was closing");
    const takeoverMs = await untilNewLeader(tabs, closedAt);
    await publish(gateway, user, "after the takeover");
    await until("five events in the remaining tabs", async () => (await views()).every((v) => v.seqs.length >= 5));
    await sleep(300);
    for (const v of await views()) expectOnceInOrder(v, 5);
    expect(await until("one socket on the gateway", async () => (await gatewaySockets()) === 1)).toBe(true);
    takeovers.push({ engine, scenario: "leader tab closed", election: "heartbeats (no Web Locks)", tabs: 3, takeoverMs });
    await expectNoPageErrors(tabs);
  });
}

/** The tabs' own uncaught errors (the engine's protocol reports Chromium's and Firefox's too, checked after each test). */
async function expectNoPageErrors(tabs: Tab[]): Promise<void> {
  for (const tab of tabs) expect(await pageErrors(tab)).toEqual([]);
}

const ENGINES: EngineName[] = ["chromium", "firefox", "webkit"];
// WebKit's driver runs the tabs' scripts one at a time (a window switch before each): its scenarios took up to 30 s on a
// loaded 2-core machine, so each engine gets twice the suite's 60 s.
for (const engine of ENGINES) describe(`${engine}: tabs of the demo page with ?share=1`, { timeout: 120_000 }, () => defineTabScenarios(engine));

afterAll(async () => {
  if (takeovers.length === 0) return;
  await mkdir(ARTIFACTS, { recursive: true });
  await writeFile(join(ARTIFACTS, "tabs-takeover.json"), `${JSON.stringify(takeovers, null, 2)}\n`);
  for (const t of takeovers) process.stdout.write(`tabs takeover in ${t.engine} (${t.scenario}, ${t.election}, ${t.tabs} tabs): ${t.takeoverMs} ms\n`);
});
