/**
 * The demo page in Chromium against a real gateway and redis-server: a run's
 * timeline, and a gateway restart in the middle of one.
 */
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import type { DevSignIn } from "../../service/src/dev/signIn.js";
import {
  freePort,
  launchBrowser,
  pageSeqs,
  publish,
  screenshot,
  sendMessage,
  signIn,
  startGateway,
  startPage,
  watchTraffic,
  type Browser,
  type GatewayUnderTest,
} from "./harness.js";

let redis: RedisServerHandle;
let browser: Browser;
let gateway: GatewayUnderTest;
let stand: DevSignIn;

beforeAll(async () => {
  const pagePort = await freePort();
  [redis, browser] = await Promise.all([startRedis(), launchBrowser()]);
  // 300 ms per step: a run lasts ~2 s, long enough to restart the gateway in the middle of one.
  gateway = await startGateway({ redisUrl: redis.url, origins: [`http://127.0.0.1:${pagePort}`], env: { AGENT_STEP_DELAY_MS: "300" } });
  stand = await startPage(gateway, pagePort);
});
afterEach(() => {
  expect(browser.pageErrors).toEqual([]);
});
afterAll(async () => {
  await stand?.close();
  await gateway?.stop();
  await browser?.close();
  await redis?.stop();
});

const open = '[data-testid="status"][data-state="open"]';
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

it("signs in, sends a message, and shows the run's events in order with contiguous seqs", async () => {
  const page = await browser.newPage();
  await signIn(page, stand.url, "e2e-alice");
  await page.waitForSelector(open);
  expect(await page.getByTestId("status").textContent()).toContain("Connected");

  await sendMessage(page, "How do I rotate the signing key?");
  await page.waitForSelector('[data-testid="event"][data-type="agent_completed"]', { timeout: 10_000 });
  const events = await page.$$eval('[data-testid="event"]', (nodes) =>
    nodes.map((n) => ({ type: (n as HTMLElement).dataset.type, seq: Number((n as HTMLElement).dataset.seq) })),
  );
  expect(events.map((e) => e.type)).toEqual(["agent_started", "agent_thinking", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]);
  expect(events.map((e) => e.seq)).toEqual(range(1, 6));
  expect(await page.locator('[data-testid="chat-message"]').getAttribute("data-status")).toBe("delivered");
  await screenshot(page, "chat-run");
  await page.close();
});

it("reconnects by itself after a gateway restart mid-run: every seq once, none missing; a message sent meanwhile runs once", async () => {
  const user = "e2e-bob";
  const page = await browser.newPage();
  const traffic = watchTraffic(page, gateway.url);
  await signIn(page, stand.url, user);
  await page.waitForSelector(open);

  const before = [await publish(gateway, user, "published before the restart"), await publish(gateway, user, "and another")];
  await page.waitForSelector(`[data-testid="event"][data-seq="${before[1]}"]`);
  await sendMessage(page, "Summarise the release notes");
  await page.waitForSelector('[data-testid="event"][data-type="tool_executing"]', { timeout: 10_000 });

  // SIGTERM's path: every socket gets 4012; the run in flight ends with agent_error "interrupted".
  await gateway.stop();
  await page.waitForSelector('[data-testid="status"][data-state="reconnecting"]');
  await sendMessage(page, "Are you back?"); // waits in the SDK's outbox
  expect(await page.locator('[data-testid="chat-message"]').last().getAttribute("data-status")).toBe("queued");
  await gateway.start();

  await page.waitForSelector(open, { timeout: 10_000 });
  const after = [await publish(gateway, user, "published after the restart"), await publish(gateway, user, "and the last one")];
  await page.waitForSelector(`[data-testid="event"][data-seq="${after[1]}"]`, { timeout: 10_000 });
  await page.waitForFunction(
    () =>
      [...document.querySelectorAll(".run")].some(
        (run) => run.textContent?.includes("Are you back?") && run.querySelector('[data-type="agent_completed"]') !== null,
      ),
    undefined,
    { timeout: 10_000 },
  );

  const seqs = await pageSeqs(page);
  const sorted = [...seqs].sort((a, b) => a - b);
  expect(new Set(seqs).size).toBe(seqs.length); // nothing doubled
  expect(sorted).toEqual(range(1, sorted.at(-1)!)); // nothing lost
  expect(sorted.at(-1)).toBeGreaterThanOrEqual(after[1]!);

  const interrupted = page.locator('.run[data-state="failed"]', { hasText: "Summarise the release notes" });
  expect(await interrupted.locator('[data-type="agent_error"]').count()).toBe(1);
  expect(await interrupted.locator(".chip").textContent()).toBe("Interrupted");
  const resent = page.locator(".run", { hasText: "Are you back?" });
  expect(await resent.count()).toBe(1);
  expect(await resent.locator('[data-type="agent_started"]').count()).toBe(1);

  expect(await page.getByTestId("status-log").textContent()).toContain("gateway restarting, reconnecting…");
  // one ticket per attempt; no ticket used twice
  expect(traffic.tickets()).toBeGreaterThanOrEqual(2);
  expect(traffic.sockets()).toBeLessThanOrEqual(traffic.tickets() + 1); // + at most one origin probe
  await screenshot(page, "chat-after-restart");
  await page.close();
});
