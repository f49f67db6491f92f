/**
 * The SDK's ticket requester on its own (docs/protocol.md §1, §2): a fake
 * fetch that answers as the gateway would, injected timers, and a fake
 * WebSocket for the origin probe. Every request is a new POST; the 401 retry
 * at once happens once per run of refusals; 429/503 wait out Retry-After.
 */
import { describe, expect, it } from "vitest";
import { createTicketRequester, readAnswer } from "../../service/client/ticket.js";
import type { Timers, WebSocketLike } from "../../service/client/types.js";

interface Call {
  url: string;
  init: RequestInit;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

function manualTimers() {
  const pending = new Set<{ run: () => void; ms: number }>();
  const timers: Timers = {
    setTimeout: (run, ms) => {
      const t = { run, ms };
      pending.add(t);
      return t;
    },
    clearTimeout: (t) => void pending.delete(t as { run: () => void; ms: number }),
  };
  const fireAll = () => [...pending].forEach((t) => (pending.delete(t), t.run()));
  return { timers, pending, fireAll };
}

/** A socket that answers the ticketless probe upgrade with `closeCode`. */
function probeSocket(closeCode: number, opened: string[]) {
  return class implements WebSocketLike {
    readyState = 0;
    onopen = null;
    onmessage = null;
    onclose: WebSocketLike["onclose"] = null;
    onerror = null;
    constructor(url: string) {
      opened.push(url);
      setTimeout(() => this.onclose?.({ code: closeCode, reason: "" }), 1);
    }
    send(): void {}
    close(): void {}
  };
}

function setup(answer: (call: Call) => Promise<Response> | Response, probeClose = 1006) {
  const calls: Call[] = [];
  const probes: string[] = [];
  const { timers, pending, fireAll } = manualTimers();
  const requester = createTicketRequester({
    ticketUrl: "https://gw.test/api/v1/auth/websocket_ticket",
    wsUrl: "wss://gw.test/ws",
    WebSocket: probeSocket(probeClose, probes),
    fetch: async (url, init) => {
      const call = { url: String(url), init: init ?? {} };
      calls.push(call);
      return answer(call);
    },
    timers,
    now: () => Date.parse("2026-01-01T00:00:00Z"),
    timeoutMs: 10_000,
  });
  return { requester, calls, probes, pending, fireAll };
}

const always = () => true;

describe("the ticket requester", () => {
  it("POSTs the token as a bearer, without cookies or cache, and asks again for every attempt", async () => {
    let n = 0;
    const { requester, calls, pending } = setup(() => json(201, { ticket: `t-${++n}` }));
    expect(await requester.request("jwt-1", always)).toBe("t-1");
    expect(await requester.request("jwt-2", always)).toBe("t-2");
    expect(calls.map((c) => c.url)).toEqual(["https://gw.test/api/v1/auth/websocket_ticket", "https://gw.test/api/v1/auth/websocket_ticket"]);
    expect(calls[1]!.init).toMatchObject({ method: "POST", headers: { authorization: "Bearer jwt-2" }, cache: "no-store", credentials: "omit" });
    expect(pending.size).toBe(0); // the timeout is cleared with the answer
  });

  it("retries a refused token at once with a fresh one, once; a second refusal backs off; a ticket resets that", async () => {
    const answers = [401, 401, 201, 401];
    const { requester } = setup(() => {
      const status = answers.shift()!;
      return status === 201 ? json(201, { ticket: "t" }) : json(401, { error: { code: "TOKEN_EXPIRED", message: "expired" } });
    });
    expect(await requester.request("a", always)).toMatchObject({ errorCode: "TOKEN_EXPIRED", status: 401, immediate: true, refreshToken: true });
    expect(await requester.request("b", always)).toMatchObject({ errorCode: "TOKEN_EXPIRED", immediate: false, refreshToken: true });
    expect(await requester.request("c", always)).toBe("t");
    expect(await requester.request("d", always)).toMatchObject({ immediate: true });
  });

  it("keeps the 'already retried' mark across other refusals (a 429 between two 401s)", async () => {
    const answers = [json(401, {}), json(429, {}, { "retry-after": "2" }), json(401, {})];
    const { requester } = setup(() => answers.shift()!);
    expect(await requester.request("a", always)).toMatchObject({ errorCode: "TOKEN_INVALID", immediate: true });
    expect(await requester.request("a", always)).toMatchObject({ errorCode: "RATE_LIMITED", retryAfterMs: 2000 });
    expect(await requester.request("a", always)).toMatchObject({ errorCode: "TOKEN_INVALID", immediate: false });
  });

  it("gives up after the timeout with TICKET_TIMEOUT, and abort() ends a request in flight", async () => {
    const hang = ({ init }: Call) => new Promise<Response>((_, reject) => init.signal!.addEventListener("abort", () => reject(new Error("aborted"))));
    const timed = setup(hang);
    const first = timed.requester.request("a", always);
    await Promise.resolve();
    expect([...timed.pending].map((t) => t.ms)).toEqual([10_000]);
    timed.fireAll();
    expect(await first).toEqual({ errorCode: "TICKET_TIMEOUT", action: "reconnect" });

    const aborted = setup(hang);
    const second = aborted.requester.request("a", always);
    aborted.requester.abort();
    expect(await second).toMatchObject({ errorCode: "TICKET_TIMEOUT" });
    expect(aborted.probes).toEqual([]);
  });

  it("tells a forbidden origin from a network outage by one ticketless upgrade", async () => {
    const down = () => Promise.reject(new TypeError("Failed to fetch"));
    const forbidden = setup(down, 4500);
    expect(await forbidden.requester.request("a", always)).toEqual({ errorCode: "ORIGIN_FORBIDDEN", action: "stop", code: 4500 });
    expect(forbidden.probes).toEqual(["wss://gw.test/ws"]);

    const outage = setup(down, 1006);
    expect(await outage.requester.request("a", always)).toEqual({ errorCode: "NETWORK_ERROR", action: "reconnect", message: "Failed to fetch" });

    const givenUp = setup(down, 4500);
    expect(await givenUp.requester.request("a", () => false)).toMatchObject({ errorCode: "NETWORK_ERROR" });
    expect(givenUp.probes).toEqual([]); // an attempt nobody waits for does not probe
  });
});

describe("reading the gateway's answer", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");

  it("honours Retry-After (seconds or a date) on 429 and 503, with the contract's 1 s when a browser hides it", () => {
    expect(readAnswer(429, {}, "7", now, false)).toMatchObject({ errorCode: "RATE_LIMITED", action: "reconnect", retryAfterMs: 7000 });
    expect(readAnswer(503, {}, "Thu, 01 Jan 2026 00:00:30 GMT", now, false)).toMatchObject({ errorCode: "TICKET_STORE_UNAVAILABLE", retryAfterMs: 30_000 });
    expect(readAnswer(503, { error: { code: "AUTH_UNAVAILABLE", message: "keys" } }, null, now, false)).toMatchObject({ errorCode: "AUTH_UNAVAILABLE", message: "keys", retryAfterMs: 1000 });
  });

  it("stops on 403, and retries anything else with backoff under the gateway's code or HTTP_ERROR", () => {
    expect(readAnswer(403, { error: { code: "ORIGIN_FORBIDDEN", message: "no" } }, null, now, false)).toMatchObject({ errorCode: "ORIGIN_FORBIDDEN", action: "stop", status: 403 });
    expect(readAnswer(502, undefined, null, now, false)).toEqual({ errorCode: "HTTP_ERROR", action: "reconnect", status: 502, message: "HTTP 502" });
    expect(readAnswer(500, { error: { code: "NOT_A_CODE", message: "m" } }, null, now, false)).toMatchObject({ errorCode: "HTTP_ERROR", message: "m" });
  });

  it("takes only a non-empty string ticket from a 201", () => {
    expect(readAnswer(201, { ticket: "" }, null, now, false)).toMatchObject({ errorCode: "HTTP_ERROR", status: 201 });
    expect(readAnswer(200, { ticket: "t" }, null, now, false)).toMatchObject({ errorCode: "HTTP_ERROR" });
  });
});
