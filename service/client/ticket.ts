/**
 * The ticket requester: POST /api/v1/auth/websocket_ticket with the app's
 * token (§1), once per connection attempt (a ticket is single-use and
 * short-lived, so none is kept), and what the answer means for the retry:
 * a 401 retries once at once with a force-refreshed token, 429 and 503 wait
 * out Retry-After, 403 stops.
 */
import { isErrorCode } from "./reasons.js";
import { parseRetryAfter } from "./backoff.js";
import { closeQuietly, messageOf, noop, parseFrame, type Failure } from "./failure.js";
import type { Timers, WebSocketConstructor, WebSocketLike } from "./types.js";

export interface TicketRequesterOptions {
  readonly ticketUrl: string;
  readonly wsUrl: string;
  readonly WebSocket: WebSocketConstructor;
  readonly fetch: typeof fetch;
  readonly timers: Timers;
  readonly now: () => number;
  /** The request, body included. */
  readonly timeoutMs: number;
}

export interface TicketRequester {
  /** The ticket, or why there is none. `current()` turns false when the attempt was given up (it then skips the origin probe). */
  request(token: string, current: () => boolean): Promise<string | Failure>;
  /** Aborts the request in flight (the app closed the client). */
  abort(): void;
}

/** How long the origin probe (see probeOrigin) may take. */
const PROBE_TIMEOUT_MS = 5000;

export function createTicketRequester(options: TicketRequesterOptions): TicketRequester {
  let inFlight: AbortController | undefined;
  /** A 401 was already answered with an immediate retry since the last ticket: the next one backs off. */
  let tokenRetried = false;

  async function request(token: string, current: () => boolean): Promise<string | Failure> {
    const abort = new AbortController();
    inFlight = abort;
    const timer = options.timers.setTimeout(() => abort.abort(), options.timeoutMs);
    let response: Response;
    let body: unknown;
    try {
      response = await options.fetch(options.ticketUrl, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        cache: "no-store",
        credentials: "omit",
        signal: abort.signal,
      });
      body = await response.json().catch(() => undefined);
    } catch (err) {
      if (abort.signal.aborted) return { errorCode: "TICKET_TIMEOUT", action: "reconnect" };
      if (current() && (await probeOrigin(options, current))) return { errorCode: "ORIGIN_FORBIDDEN", action: "stop", code: 4500 };
      return { errorCode: "NETWORK_ERROR", action: "reconnect", message: messageOf(err) };
    } finally {
      options.timers.clearTimeout(timer);
      if (inFlight === abort) inFlight = undefined;
    }
    const result = readAnswer(response.status, body, response.headers.get("retry-after"), options.now(), tokenRetried);
    if (typeof result === "string") tokenRetried = false;
    else if (result.refreshToken) tokenRetried = true;
    return result;
  }

  return { request, abort: () => inFlight?.abort() };
}

/** The gateway's answer as a ticket or a Failure; `tokenRetried`: a 401 was already retried at once. */
export function readAnswer(status: number, body: unknown, retryAfter: string | null, now: number, tokenRetried: boolean): string | Failure {
  const ticket = (body as { ticket?: unknown } | undefined)?.ticket;
  if (status === 201 && typeof ticket === "string" && ticket !== "") return ticket;
  const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const code = typeof error?.code === "string" && isErrorCode(error.code) ? error.code : undefined;
  const message = typeof error?.message === "string" ? error.message : `HTTP ${status}`;
  if (status === 401) {
    // TOKEN_EXPIRED (or a token the gateway cannot use): the next attempt asks the app for a fresh one.
    const errorCode = code ?? "TOKEN_INVALID";
    // The app's cached token is often just stale (a restarted dev server's new key, a rotation): the first
    // refusal retries at once with a force-refreshed token; only a refusal of that one too backs off.
    const immediate = !tokenRetried && (errorCode === "TOKEN_INVALID" || errorCode === "TOKEN_EXPIRED");
    return { errorCode, action: "reconnect", status, message, immediate, refreshToken: true };
  }
  if (status === 403) return { errorCode: code ?? "ORIGIN_FORBIDDEN", action: "stop", status, message };
  if (status === 429 || status === 503) {
    return {
      errorCode: code ?? (status === 429 ? "RATE_LIMITED" : "TICKET_STORE_UNAVAILABLE"),
      action: "reconnect",
      status,
      message,
      // The gateway always sets Retry-After (at least 1 s), but a browser hides it unless the CORS
      // response exposes it (Access-Control-Expose-Headers); then the contract's minimum stands in.
      retryAfterMs: parseRetryAfter(retryAfter, now) ?? 1000,
    };
  }
  // Anything else (a proxy's 502, a misrouted 404) may pass: retry with backoff rather than give up for good.
  return { errorCode: code ?? "HTTP_ERROR", action: "reconnect", status, message };
}

/**
 * A browser refuses a CORS preflight without telling the script why: a
 * page on an origin the gateway does not allow sees the ticket request fail
 * exactly like a network outage, and would retry forever. WebSocket upgrades
 * are not subject to CORS, and the gateway checks the Origin of /ws before
 * the ticket (4500 ORIGIN_FORBIDDEN), so after a failed ticket request one
 * ticketless upgrade tells the two apart. Any other answer (4400 for an
 * allowed origin, 1006 when the gateway is down) means "network": retry.
 */
function probeOrigin(options: TicketRequesterOptions, current: () => boolean): Promise<boolean> {
  return new Promise((resolve) => {
    let socket: WebSocketLike | undefined;
    let settled = false;
    const done = (forbidden: boolean) => {
      if (settled) return;
      settled = true;
      options.timers.clearTimeout(timer);
      if (socket) closeQuietly(socket);
      resolve(forbidden && current());
    };
    const timer = options.timers.setTimeout(() => done(false), PROBE_TIMEOUT_MS);
    try {
      socket = new options.WebSocket(options.wsUrl);
    } catch {
      return done(false);
    }
    socket.onerror = noop;
    socket.onmessage = (event) => {
      const frame = parseFrame(event.data);
      done(frame?.type === "error" && frame.code === "ORIGIN_FORBIDDEN");
    };
    socket.onclose = (event) => done(event.code === 4500);
  });
}
