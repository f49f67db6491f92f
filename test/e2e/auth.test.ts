/**
 * The page's answers to the gateway's refusals, in Chromium: an origin it
 * does not allow, a revoked session, and a ticket that expired before use.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import type { DevSignIn } from "../../service/src/dev/signIn.js";
import {
  freePort,
  internal,
  launchBrowser,
  screenshot,
  sendMessage,
  signIn,
  sleep,
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
const cleanup: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  const pagePort = await freePort();
  [redis, browser] = await Promise.all([startRedis(), launchBrowser()]);
  gateway = await startGateway({ redisUrl: redis.url, origins: [`http://127.0.0.1:${pagePort}`] });
  stand = await startPage(gateway, pagePort);
});
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
  expect(browser.pageErrors).toEqual([]);
});
afterAll(async () => {
  await stand?.close();
  await gateway?.dispose();
  await browser?.close();
  await redis?.stop();
});

const status = (page: Page) => page.getByTestId("status");

/** Asserts that the page asks the gateway for nothing more during `ms`. */
async function expectQuiet(traffic: ReturnType<typeof watchTraffic>, ms: number): Promise<void> {
  const [tickets, sockets] = [traffic.tickets(), traffic.sockets()];
  await sleep(ms);
  expect({ tickets: traffic.tickets(), sockets: traffic.sockets() }).toEqual({ tickets, sockets });
}

describe("refusals that stop the client", () => {
  it("an origin the gateway does not allow: shows why, and stops retrying", async () => {
    // The same page, served from a port that is not in ALLOWED_ORIGINS.
    const elsewhere = await startPage(gateway);
    cleanup.push(() => elsewhere.close());
    const page = await browser.newPage();
    cleanup.push(() => page.close());
    const traffic = watchTraffic(page, gateway.url);
    await signIn(page, elsewhere.url, "e2e-carol");

    await page.waitForSelector('[data-testid="status"][data-state="closed"][data-code="ORIGIN_FORBIDDEN"]', { timeout: 10_000 });
    expect(await status(page).textContent()).toContain("origin not allowed");
    // The browser hides the refused preflight from the script (the ticket request just "fails");
    // one ticketless socket, the SDK's probe, learned 4500.
    expect({ tickets: traffic.tickets(), sockets: traffic.sockets() }).toEqual({ tickets: 1, sockets: 1 });
    expect(await page.getByTestId("notice").textContent()).toContain(`does not allow the origin ${elsewhere.url}`);
    await expectQuiet(traffic, 3000);
    expect(gateway.logs.records.filter((r) => r.event === "ws_auth" && r.reason === "ORIGIN_FORBIDDEN")).toHaveLength(1);
    await screenshot(page, "origin-forbidden");
  });

  it("a revoke through the internal API: shows 'session revoked', and stops", async () => {
    const page = await browser.newPage();
    cleanup.push(() => page.close());
    const traffic = watchTraffic(page, gateway.url);
    await signIn(page, stand.url, "e2e-dave");
    await page.waitForSelector('[data-testid="status"][data-state="open"]');

    const revoked = await internal(gateway, "/users/e2e-dave/revoke");
    expect(revoked).toEqual({ status: 200, body: { closed: 1 } });
    await page.waitForSelector('[data-testid="status"][data-state="closed"][data-code="SESSION_REVOKED"]');
    expect(await status(page).textContent()).toContain("signed out: session revoked");
    expect(await page.getByTestId("sign-in").isVisible()).toBe(true); // offered to sign in again
    expect(await page.getByTestId("notice").textContent()).toContain("Sign in again to continue");
    expect({ tickets: traffic.tickets(), sockets: traffic.sockets() }).toEqual({ tickets: 1, sockets: 1 });
    await expectQuiet(traffic, 2000);
    await screenshot(page, "session-revoked");
  });
});

describe("a ticket that expires before use", () => {
  it("is renewed: the page gets a new ticket and connects", async () => {
    const pagePort = await freePort();
    const shortTtl = await startGateway({ redisUrl: redis.url, origins: [`http://127.0.0.1:${pagePort}`], env: { TICKET_TTL_SECONDS: "1" } });
    cleanup.push(() => shortTtl.dispose());
    const shortPage = await startPage(shortTtl, pagePort);
    cleanup.push(() => shortPage.close());
    const page = await browser.newPage();
    cleanup.push(() => page.close());
    // The first socket opens 2.5 s after it was asked for (a stalled network, a frozen tab): its ticket has expired by then.
    await page.addInitScript(() => {
      const Real = window.WebSocket;
      let first = true;
      class Stalled {
        readyState = 0;
        onopen: ((e: Event) => void) | null = null;
        onmessage: ((e: MessageEvent) => void) | null = null;
        onclose: ((e: CloseEvent) => void) | null = null;
        onerror: ((e: Event) => void) | null = null;
        private real: WebSocket | undefined;
        private abandoned = false;
        constructor(url: string) {
          setTimeout(() => {
            if (this.abandoned) return;
            const s = (this.real = new Real(url));
            s.onopen = (e) => ((this.readyState = 1), this.onopen?.(e));
            s.onmessage = (e) => this.onmessage?.(e);
            s.onerror = (e) => this.onerror?.(e);
            s.onclose = (e) => ((this.readyState = 3), this.onclose?.(e));
          }, 2500);
        }
        send(data: string) {
          this.real?.send(data);
        }
        close(code?: number, reason?: string) {
          this.abandoned = true;
          this.real?.close(code, reason);
        }
      }
      window.WebSocket = function (url: string | URL, protocols?: string | string[]) {
        if (first && String(url).includes("ticket=")) {
          first = false;
          return new Stalled(String(url));
        }
        return new Real(url, protocols);
      } as unknown as typeof WebSocket;
    });
    const traffic = watchTraffic(page, shortTtl.url);
    const tickets: string[] = [];
    page.on("websocket", (ws) => tickets.push(new URL(ws.url()).searchParams.get("ticket") ?? ""));
    await signIn(page, shortPage.url, "e2e-erin");

    await page.waitForSelector('[data-testid="status"][data-state="open"]', { timeout: 10_000 });
    expect(await page.getByTestId("status-log").textContent()).toContain("ticket expired, renewing…");
    expect({ tickets: traffic.tickets(), sockets: traffic.sockets() }).toEqual({ tickets: 2, sockets: 2 });
    expect(new Set(tickets).size).toBe(2);
    expect(shortTtl.logs.records.some((r) => r.event === "ws_auth" && r.reason === "TICKET_EXPIRED")).toBe(true);
    // Tickets never reach a log line.
    for (const ticket of tickets) expect(shortTtl.logs.text).not.toContain(ticket);

    await sendMessage(page, "Still there?");
    await page.waitForSelector('[data-testid="event"][data-type="agent_completed"]', { timeout: 10_000 });
  });
});
