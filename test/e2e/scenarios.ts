/**
 * The demo page's scenarios, run in one engine per test file against a real
 * gateway and redis-server: sign in and run; a gateway restart mid-run; an
 * origin the gateway does not allow; a revoke; a ticket that expired before
 * use; the sign-in form's rules; a restart that lost the history; a run its
 * backend reports cut. A failing test leaves a screenshot in the test output.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DevSignIn } from "../../service/src/dev/signIn.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { DemoPage } from "./demoPage.js";
import { call, launchEngine, type EngineBrowser, type EngineName } from "./engines/index.js";
import { freePort, internal, publish, sleep, startGateway, startPage, type GatewayUnderTest } from "./harness.js";

const OPEN = '[data-testid="status"][data-state="open"]';
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** What a scenario works with: the engine's browser, a gateway on Redis, and the demo page allowed by it. */
interface World {
  readonly engine: EngineName;
  readonly gateway: GatewayUnderTest;
  readonly stand: DevSignIn;
  readonly redisUrl: string;
  /** A new page: screenshotted if the test fails, checked for uncaught errors and closed after it. */
  newPage(name: string): Promise<DemoPage>;
  /** Runs after the test (in reverse order), failed or not. */
  defer(step: () => Promise<unknown>): void;
}

export function defineScenarios(engine: EngineName): void {
  let redis: RedisServerHandle | undefined;
  let browser: EngineBrowser | undefined;
  let gateway: GatewayUnderTest | undefined;
  let stand: DevSignIn | undefined;
  const deferred: Array<() => Promise<unknown>> = [];
  const opened: Array<{ page: DemoPage; name: string }> = [];

  beforeAll(async () => {
    const pagePort = await freePort();
    // One after the other: a browser that fails to start must not leave the redis-server running (afterAll stops what started).
    redis = await startRedis();
    browser = await launchEngine(engine);
    // 300 ms per step: a run lasts ~2 s, long enough to restart the gateway in the middle of one.
    gateway = await startGateway({ redisUrl: redis.url, origins: [`http://127.0.0.1:${pagePort}`], env: { AGENT_STEP_DELAY_MS: "300" } });
    stand = await startPage(gateway, pagePort);
  });
  afterEach(async (context) => {
    // Here, before the pages close (vitest calls onTestFailed only after afterEach): the page as the failure left it.
    const failed = context.task.result?.state === "fail";
    const pageErrors: string[] = [];
    for (const { page, name } of opened.splice(0)) {
      if (failed) await page.screenshot(`FAILED-${name}`).catch(() => undefined);
      pageErrors.push(...((await page.record().catch(() => undefined))?.errors ?? []));
      await page.close().catch(() => undefined);
    }
    for (const step of deferred.splice(0).reverse()) await step().catch(() => undefined);
    expect(pageErrors, "uncaught errors in the page").toEqual([]);
    expect(browser?.pageErrors.splice(0) ?? []).toEqual([]);
  });
  afterAll(async () => {
    await stand?.close();
    await gateway?.dispose();
    await browser?.close();
    await redis?.stop();
  });

  const world: World = {
    engine,
    get gateway() {
      return gateway!;
    },
    get stand() {
      return stand!;
    },
    get redisUrl() {
      return redis!.url;
    },
    async newPage(name) {
      const page = new DemoPage(await browser!.newPage(), engine);
      opened.push({ page, name });
      return page;
    },
    defer: (step) => void deferred.push(step),
  };

  describe(`${engine}: the demo page`, () => {
    for (const [title, scenario] of SCENARIOS) it(title, () => scenario(world));
  });
}

async function signInAndRun(w: World): Promise<void> {
  const page = await w.newPage("chat-run");
  await page.open(w.stand.url);
  await page.signIn(`e2e-${w.engine}-alice`);
  await page.waitForSelector(OPEN);
  expect(await page.text('[data-testid="status"]')).toContain("Connected");

  await page.send("How do I rotate the signing key?");
  await page.waitForSelector('[data-testid="event"][data-type="agent_completed"]', 15_000);
  const types = await page.page.evaluate<string[]>(`[...document.querySelectorAll('[data-testid="event"]')].map((n) => n.dataset.type)`);
  expect(types).toEqual(["agent_started", "agent_thinking", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]);
  expect(await page.seqs()).toEqual(range(1, 6));
  expect(await page.attribute('[data-testid="chat-message"]', "data-status")).toBe("delivered");
  await page.screenshot("chat-run");
}

async function restartMidRun(w: World): Promise<void> {
  const user = `e2e-${w.engine}-bob`;
  const page = await w.newPage("restart");
  await page.open(w.stand.url);
  await page.signIn(user);
  await page.waitForSelector(OPEN);

  const before = [await publish(w.gateway, user, "published before the restart"), await publish(w.gateway, user, "and another")];
  await page.waitForSelector(`[data-testid="event"][data-seq="${before[1]}"]`);
  await page.send("Summarise the release notes");
  await page.waitForSelector('[data-testid="event"][data-type="tool_executing"]', 15_000);

  // SIGTERM's path: every socket gets 4012. The agent backend lives outside the gateway, so the run in flight is not
  // cut: the backend retries its publishes until the gateway is back, and the run ends Completed, never left Running.
  await w.gateway.stop();
  await page.waitForSelector('[data-testid="status"][data-state="reconnecting"]');
  await page.send("Are you back?"); // waits in the SDK's outbox
  expect(await page.attribute('[data-testid="chat-message"]', "data-status", "last")).toBe("queued");
  await w.gateway.start();

  await page.waitForSelector(OPEN, 15_000);
  const after = [await publish(w.gateway, user, "published after the restart"), await publish(w.gateway, user, "and the last one")];
  await page.waitForSelector(`[data-testid="event"][data-seq="${after[1]}"]`, 15_000);
  await page.waitFor(
    "the run of the message sent while down to complete",
    () => [...document.querySelectorAll(".run")].some((run) => run.textContent?.includes("Are you back?") && run.querySelector('[data-type="agent_completed"]') !== null),
    [],
    15_000,
  );
  await page.waitFor(
    "the run cut by nothing but the restart to complete",
    () => [...document.querySelectorAll(".run")].some((run) => run.textContent?.includes("Summarise the release notes") && run.querySelector('[data-type="agent_completed"]') !== null),
    [],
    15_000,
  );

  // The page's open socket saw the restart as 4012 SERVICE_RESTART, cleanly: not 1006. (Attempts while
  // the gateway was down, the SDK's origin probe among them, do end with 1006: nothing listened.)
  const record = await page.record();
  expect(record.closes[0]).toEqual({ code: 4012, reason: "SERVICE_RESTART", wasClean: true });

  const seqs = await page.seqs();
  const sorted = [...seqs].sort((a, b) => a - b);
  expect(new Set(seqs).size).toBe(seqs.length); // nothing doubled
  expect(sorted).toEqual(range(1, sorted.at(-1)!)); // nothing lost
  expect(sorted.at(-1)).toBeGreaterThanOrEqual(after[1]!);

  const runs = await page.page.evaluate<Array<{ runId: string; text: string; state: string; chip: string; errors: number; starts: number }>>(
    `[...document.querySelectorAll(".run")].map((r) => ({ runId: r.dataset.runId, text: r.textContent, state: r.dataset.state, chip: r.querySelector(".chip").textContent,
      errors: r.querySelectorAll('[data-type="agent_error"]').length, starts: r.querySelectorAll('[data-type="agent_started"]').length }))`,
  );
  const spanning = runs.filter((r) => r.text.includes("Summarise the release notes"));
  expect(spanning).toMatchObject([{ state: "completed", chip: "Completed", errors: 0, starts: 1 }]); // one card, its steps on both sides of the restart
  // Every run the agent started has ended ("backend-run" is this test's own publishes, a run it never ends).
  expect(runs.filter((r) => r.state === "running" && r.runId !== "backend-run")).toEqual([]);
  const resent = runs.filter((r) => r.text.includes("Are you back?"));
  expect(resent).toMatchObject([{ state: "completed", starts: 1 }]); // ran exactly once

  expect(await page.text('[data-testid="status-log"]')).toContain("gateway restarting, reconnecting…");
  // one ticket per attempt; no ticket used twice
  expect(record.tickets).toBeGreaterThanOrEqual(2);
  expect(record.sockets.length).toBeLessThanOrEqual(record.tickets + 1); // + at most one origin probe
  await page.screenshot("chat-after-restart");
}

async function forbiddenOrigin(w: World): Promise<void> {
  // The same page, served from a port that is not in ALLOWED_ORIGINS.
  const elsewhere = await startPage(w.gateway);
  w.defer(() => elsewhere.close());
  const page = await w.newPage("origin-forbidden");
  await page.open(elsewhere.url);
  const refusedBefore = w.gateway.logs.records.filter((r) => r.event === "ws_auth" && r.reason === "ORIGIN_FORBIDDEN").length;
  await page.signIn(`e2e-${w.engine}-carol`);

  await page.waitForSelector('[data-testid="status"][data-state="closed"][data-code="ORIGIN_FORBIDDEN"]');
  expect(await page.text('[data-testid="status"]')).toContain("origin not allowed");
  // The browser hides the refused preflight from the script (the ticket request just "fails");
  // one ticketless socket, the SDK's probe, learned 4500.
  const record = await page.record();
  expect({ tickets: record.tickets, sockets: record.sockets.length }).toEqual({ tickets: 1, sockets: 1 });
  expect(record.closes).toEqual([{ code: 4500, reason: "ORIGIN_FORBIDDEN", wasClean: true }]);
  expect(await page.text('[data-testid="notice"]')).toContain(`does not allow the origin ${elsewhere.url}`);
  await expectQuiet(page, 3000);
  const refused = w.gateway.logs.records.filter((r) => r.event === "ws_auth" && r.reason === "ORIGIN_FORBIDDEN").length;
  expect(refused - refusedBefore).toBe(1);
  await page.screenshot("origin-forbidden");
}

async function revoke(w: World): Promise<void> {
  const user = `e2e-${w.engine}-dave`;
  const page = await w.newPage("revoked");
  await page.open(w.stand.url);
  await page.signIn(user);
  await page.waitForSelector(OPEN);

  const revoked = await internal(w.gateway, `/users/${user}/revoke`);
  expect(revoked).toEqual({ status: 200, body: { closed: 1 } });
  await page.waitForSelector('[data-testid="status"][data-state="closed"][data-code="SESSION_REVOKED"]');
  expect(await page.text('[data-testid="status"]')).toContain("signed out: session revoked");
  expect(await call(page.page, () => !(document.querySelector('[data-testid="sign-in"]') as HTMLElement).closest("[hidden]"))).toBe(true);
  expect(await page.text('[data-testid="notice"]')).toContain("Sign in again to continue");
  const record = await page.record();
  expect({ tickets: record.tickets, sockets: record.sockets.length }).toEqual({ tickets: 1, sockets: 1 });
  expect(record.closes).toEqual([{ code: 4501, reason: "SESSION_REVOKED", wasClean: true }]);
  await expectQuiet(page, 2000);
  await page.screenshot("session-revoked");
}

async function expiredTicketRenewed(w: World): Promise<void> {
  const pagePort = await freePort();
  const shortTtl = await startGateway({ redisUrl: w.redisUrl, origins: [`http://127.0.0.1:${pagePort}`], env: { TICKET_TTL_SECONDS: "1" } });
  w.defer(() => shortTtl.dispose());
  const shortPage = await startPage(shortTtl, pagePort);
  w.defer(() => shortPage.close());
  const page = await w.newPage("ticket-expired");
  // The first socket opens 2.5 s after it was asked for (a stalled network, a frozen tab): its ticket has expired by then.
  await page.open(shortPage.url, { stallFirstTicketSocketMs: 2500 });
  await page.signIn(`e2e-${w.engine}-erin`);

  await page.waitForSelector(OPEN, 15_000);
  expect(await page.text('[data-testid="status-log"]')).toContain("ticket expired, renewing…");
  const record = await page.record();
  expect({ tickets: record.tickets, sockets: record.sockets.length }).toEqual({ tickets: 2, sockets: 2 });
  expect(record.closes[0]).toEqual({ code: 4401, reason: "TICKET_EXPIRED", wasClean: true });
  expect(shortTtl.logs.records.some((r) => r.event === "ws_auth" && r.reason === "TICKET_EXPIRED")).toBe(true);
  const tickets = record.sockets.map((url) => new URL(url).searchParams.get("ticket") ?? "");
  expect(new Set(tickets).size).toBe(2);
  for (const ticket of tickets) expect(shortTtl.logs.text).not.toContain(ticket); // tickets never reach a log line

  await page.send("Still there?");
  await page.waitForSelector('[data-testid="event"][data-type="agent_completed"]', 15_000);
}

async function signInFormRules(w: World): Promise<void> {
  const page = await w.newPage("sign-in-rules");
  await page.open(w.stand.url);
  expect(await page.text("#user-id-rules")).toContain("Up to 64 letters");
  const long = "a".repeat(65);
  await page.signIn(long);
  await page.waitForSelector("#signin-error:not([hidden])");
  expect(await page.text("#signin-error")).toBe("That user id has 65 characters; at most 64 are allowed.");
  expect(await call(page.page, () => (document.querySelector("#user-id") as HTMLInputElement).value)).toBe(long); // not cut
  await page.signIn("ann lee");
  await page.waitFor("the error about spaces", () => document.querySelector("#signin-error")?.textContent?.includes("not spaces") === true);
  expect(await page.attribute('[data-testid="status"]', "data-state")).toBe("closed"); // no sign-in happened
}

async function historyLostOnRestart(w: World): Promise<void> {
  const pagePort = await freePort();
  const forgetful = await startGateway({ origins: [`http://127.0.0.1:${pagePort}`], env: { AGENT_STEP_DELAY_MS: "300" } });
  w.defer(() => forgetful.dispose());
  const standalone = await startPage(forgetful, pagePort);
  w.defer(() => standalone.close());
  const page = await w.newPage("resync");
  await page.open(standalone.url);
  await page.signIn(`e2e-${w.engine}-frank`);
  await page.waitForSelector(OPEN);
  await page.send("Start something long");
  await page.waitForSelector('[data-testid="event"][data-type="tool_executing"]', 15_000);

  await forgetful.stop(); // the in-memory history goes with it; the agent backend carries on with the run
  await forgetful.start();
  await page.waitForSelector(".note", 15_000);
  await page.waitForSelector(OPEN, 15_000);
  await page.send("And now?");
  await page.waitFor(
    "the run of the message sent after the resync to complete",
    () => [...document.querySelectorAll(".run")].some((run) => run.textContent?.includes("And now?") && run.querySelector('[data-type="agent_completed"]') !== null),
    [],
    15_000,
  );
  // The run that was going on: its later steps arrive on a card of their own and end it; no card is left "Running".
  await page.waitFor("no run left running", () => document.querySelectorAll('.run[data-state="running"]').length === 0, [], 15_000);

  // The new stream's seqs, once each and without a gap (the old 1-4 are gone, not shown beside the new ones).
  const seqs = await page.seqs();
  const sorted = [...seqs].sort((a, b) => a - b);
  expect(new Set(seqs).size).toBe(seqs.length);
  expect(sorted).toEqual(range(sorted[0]!, sorted.at(-1)!));
  const started = await page.count('[data-testid="event"][data-type="agent_started"]');
  expect(started).toBe(1); // "And now?"'s; the earlier run's start was in the lost history
  const notes = await page.page.evaluate<string[]>(`[...document.querySelectorAll(".note")].map((n) => n.textContent)`);
  // One sentence. "From seq N": N is 1 unless the backend published again before the page resumed.
  expect(notes).toEqual([`The gateway no longer has the earlier events, so the timeline starts again from seq ${sorted[0]}, and the run in progress shows only its steps from here on.`]);
  await page.screenshot("resync");
}

async function runCutByItsBackend(w: World): Promise<void> {
  const user = `e2e-${w.engine}-grace`;
  const page = await w.newPage("interrupted");
  await page.open(w.stand.url);
  await page.signIn(user);
  await page.waitForSelector(OPEN);
  // What a backend whose worker died mid-run publishes: the run's end, as agent_error INTERRUPTED.
  const event = (type: string, data: Record<string, unknown>) =>
    internal(w.gateway, `/users/${user}/events`, { type, run_id: "run-cut-by-its-backend", thread_id: "web-demo", data });
  expect((await event("agent_started", { agent: "demo" })).status).toBe(202);
  await page.waitForSelector('.run[data-state="running"]');
  expect((await event("agent_error", { error: "INTERRUPTED", message: "the agent's worker restarted" })).status).toBe(202);
  await page.waitForSelector('.run[data-state="failed"]');
  expect(await page.text(".run .chip")).toBe("Interrupted");
  expect(await page.count('.run[data-state="running"]')).toBe(0);
}

/** Each scenario, named as its test. */
const SCENARIOS: Array<[string, (w: World) => Promise<void>]> = [
  ["signs in, sends a message, and shows the run's events in order with contiguous seqs", signInAndRun],
  ["after a gateway restart mid-run: sees 4012, reconnects by itself, loses nothing, and a message sent meanwhile runs once", restartMidRun],
  ["an origin the gateway does not allow: shows why, and stops retrying", forbiddenOrigin],
  ["a revoke through the internal API: shows 'session revoked', and stops", revoke],
  ["a ticket that expired before use is renewed: the page gets a new ticket and connects", expiredTicketRenewed],
  ["the sign-in form says what a user id may be, and neither cuts nor accepts a wrong one", signInFormRules],
  ["after a restart that lost the history (the embedded store): starts the timeline again instead of showing seqs twice, and no run is left running", historyLostOnRestart],
  ["a run its backend reports cut (agent_error INTERRUPTED) shows Interrupted, not Running", runCutByItsBackend],
];

/** Asserts that the page asks the gateway for nothing more during `ms`. */
async function expectQuiet(page: DemoPage, ms: number): Promise<void> {
  const before = await page.record();
  await sleep(ms);
  const after = await page.record();
  expect({ tickets: after.tickets, sockets: after.sockets.length }).toEqual({ tickets: before.tickets, sockets: before.sockets.length });
}
