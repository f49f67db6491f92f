/**
 * Every error code the gateway can answer with, in one table: its HTTP status
 * (for the HTTP endpoints), its WebSocket close code (for the /ws endpoint),
 * and the text a person reads. Routes throw `GatewayError(code)`; the HTTP
 * error handler and the socket closer turn it into a response or a close.
 *
 * This module is imported by the browser SDK too, so it must stay free of
 * Node imports. `docs/protocol.md` mirrors it, and a test holds the two
 * together.
 *
 * Close codes come in ranges, like Centrifuge's "reconnect" and "terminal"
 * blocks: 4000-4499 reconnect with a new ticket, 4500-4999 stop. The 1xxx
 * codes are the standard ones (RFC 6455 §7.4.1), except the three registered
 * last (Service Restart, Try Again Later, Bad Gateway): WebKit-based stacks
 * report them to the page as 1006 (and answer 1002), so a restart would look
 * like a network drop. 4012 and 4013 stand in for the first two.
 */
export const ERRORS = {
  // ── User tokens and tickets, HTTP (POST /api/v1/auth/websocket_ticket) ──
  TOKEN_MISSING: { status: 401 },
  TOKEN_INVALID: { status: 401 },
  TOKEN_EXPIRED: { status: 401 },
  TOKEN_REVOKED: { status: 401 },
  ORIGIN_FORBIDDEN: { status: 403, close: 4500 },
  RATE_LIMITED: { status: 429, close: 4429 },
  TICKET_STORE_UNAVAILABLE: { status: 503, close: 4013 },
  // The auth service's keys (AUTH_JWKS_URL) cannot be had: the token is not at fault, so no 401 (which sends the
  // client for a new token). Also a non-fatal frame answering refresh_session, with `retry_after` in seconds.
  AUTH_UNAVAILABLE: { status: 503, frame: true },

  // ── Generic HTTP ──
  BAD_REQUEST: { status: 400 },
  BODY_TOO_LARGE: { status: 413 },
  UNSUPPORTED_MEDIA_TYPE: { status: 415 },
  REQUEST_TIMEOUT: { status: 408 },
  HEADERS_TOO_LARGE: { status: 431 },
  NOT_FOUND: { status: 404 },
  UPGRADE_REQUIRED: { status: 426 },
  SERVICE_UNAUTHORIZED: { status: 401 },

  // ── WebSocket: reconnect with a new ticket (4000-4499) ──
  TICKET_MISSING: { close: 4400 },
  TICKET_MALFORMED: { close: 4400 },
  TICKET_INVALID: { close: 4401 },
  TICKET_EXPIRED: { close: 4401 },
  TICKET_USED: { close: 4401 },
  SESSION_EXPIRED: { close: 4408 },
  // 4012 and 4013: Service Restart and Try Again Later, in the range every engine passes to the page.
  SERVICE_RESTART: { close: 4012 },
  CONNECTION_AGE: { close: 4012 },
  TOO_MANY_CONNECTIONS: { close: 4429 },
  SLOW_CONSUMER: { close: 4429 },

  // ── WebSocket: stop, do not reconnect (4500-4999) ──
  SESSION_REVOKED: { close: 4501 },

  // ── WebSocket: standard codes ──
  MESSAGE_TOO_BIG: { close: 1009 },
  UNSUPPORTED_DATA: { close: 1003 },
  INTERNAL_ERROR: { status: 500, close: 1011 },

  // ── Non-fatal error frames: the socket stays open ──
  MESSAGE_MALFORMED: { frame: true },
  MESSAGE_INVALID: { frame: true },
  UNKNOWN_TYPE: { frame: true },
  // TOKEN_INVALID is also sent as a non-fatal frame when refresh_session fails.
  // chat_message hand-off to the agent backend (§5a); each names the message_id.
  // RATE_LIMITED and TICKET_STORE_UNAVAILABLE are also sent as non-fatal "not accepted" frames.
  AGENT_UNAVAILABLE: { frame: true },
  MESSAGE_REJECTED: { frame: true },
  CHAT_UNAVAILABLE: { frame: true },

  // ── resync_required code ──
  HISTORY_UNAVAILABLE: { frame: true },
} as const satisfies Record<string, ErrorSpec>;

export interface ErrorSpec {
  readonly status?: number;
  readonly close?: number;
  readonly frame?: boolean;
}

export type ErrorCode = keyof typeof ERRORS;

/**
 * What a person reads for each code: the `message` of an HTTP error body or
 * an error frame. Apart from ERRORS so that the browser SDK, which imports
 * ERRORS for the close codes and shows its own words (client/reasons.ts),
 * does not ship the gateway's developer prose; the type makes every code
 * have one.
 */
export const MESSAGES: Record<ErrorCode, string> = {
  TOKEN_MISSING: "No bearer token. Send Authorization: Bearer <user JWT>.",
  TOKEN_INVALID: "The user token is not valid (signature, claims, algorithm or shape).",
  TOKEN_EXPIRED: "The user token has expired. Get a fresh one from the auth service.",
  TOKEN_REVOKED: "The user token was issued before the user's sessions were revoked. Sign in again.",
  ORIGIN_FORBIDDEN: "This origin is not allowed to use the gateway.",
  RATE_LIMITED: "Too many requests. Slow down and retry after the delay.",
  TICKET_STORE_UNAVAILABLE: "The ticket store is unavailable. Retry shortly.",
  AUTH_UNAVAILABLE: "User tokens cannot be checked right now (the auth service's keys are unreachable). Retry after the delay with the same token.",
  BAD_REQUEST: "The request is malformed.",
  BODY_TOO_LARGE: "The request body is too large.",
  UNSUPPORTED_MEDIA_TYPE: "Send the body as application/json.",
  REQUEST_TIMEOUT: "The request was not received in time.",
  HEADERS_TOO_LARGE: "The request headers are too large.",
  NOT_FOUND: "No such route.",
  UPGRADE_REQUIRED: "This endpoint speaks WebSocket only: open it with new WebSocket(url).",
  SERVICE_UNAUTHORIZED: "Internal API: send Authorization: Bearer <SERVICE_SECRET> and X-Service-Id.",
  TICKET_MISSING: "No ticket. Get one from POST /api/v1/auth/websocket_ticket and open /ws?ticket=…",
  TICKET_MALFORMED: "That is not a ticket's shape. Get a new ticket.",
  TICKET_INVALID: "Unknown ticket. Get a new ticket.",
  TICKET_EXPIRED: "The ticket expired before it was used. Get a new ticket.",
  TICKET_USED: "The ticket was already used; tickets are single-use. Get a new ticket.",
  SESSION_EXPIRED: "The user token behind this connection expired. Get a fresh token, then a ticket.",
  SERVICE_RESTART: "The gateway instance is restarting. Reconnect and resume.",
  CONNECTION_AGE: "The connection reached its maximum age. Reconnect and resume.",
  TOO_MANY_CONNECTIONS: "Too many open connections for this user.",
  SLOW_CONSUMER: "The client reads too slowly. Reconnect and resume.",
  SESSION_REVOKED: "The session was revoked. Sign in again.",
  MESSAGE_TOO_BIG: "The frame is larger than the gateway accepts.",
  UNSUPPORTED_DATA: "Binary frames are not supported; send JSON text frames.",
  INTERNAL_ERROR: "Unexpected server error. Reconnect with backoff.",
  MESSAGE_MALFORMED: "The frame is not valid JSON.",
  MESSAGE_INVALID: "The frame does not match the schema of its type.",
  UNKNOWN_TYPE: "Unknown frame type.",
  AGENT_UNAVAILABLE: "The agent backend did not accept the message in time. It was not acked; send it again shortly.",
  MESSAGE_REJECTED: "The agent backend refused the message. Do not send it again.",
  CHAT_UNAVAILABLE: "Chat is not available on this gateway (no agent backend is configured).",
  HISTORY_UNAVAILABLE: "The history no longer covers the gap. Reload state.",
};

/** The close code of an error, or undefined for codes that never close a socket. */
function closeCodeOf(code: ErrorCode): number | undefined {
  return (ERRORS[code] as ErrorSpec).close;
}

/** The close code a socket ends with for `code`: its own, or 1011 for a code that never closes a socket. */
export function socketCloseCode(code: ErrorCode): number {
  return closeCodeOf(code) ?? 1011;
}

/**
 * The code a socket is closed with after `err`: the error's own when that code
 * closes sockets, else INTERNAL_ERROR (a non-fatal frame code or an unexpected
 * error must not end a socket with a code the client reads as something else).
 */
export function socketErrorCode(err: unknown): ErrorCode {
  return isGatewayError(err) && closeCodeOf(err.code) !== undefined ? err.code : "INTERNAL_ERROR";
}

/** What a client does after a close code. The SDK and the server's `retry` flag both read this. */
export type CloseAction = "reconnect" | "reconnect_now" | "refresh_token" | "stop";

export function closeAction(code: number): CloseAction {
  if (code === 4012) return "reconnect_now";
  if (code === 4408) return "refresh_token";
  if (code >= 4500 && code <= 4999) return "stop";
  if (code === 1003 || code === 1009) return "stop";
  // 4000-4499 (4013 included), 1011, and anything the gateway did not say itself (1006 …).
  return "reconnect";
}

/**
 * What a client does after a fatal error frame naming `code`, the close that
 * follows it notwithstanding: every server-initiated close is preceded by one,
 * and a close code can be lost on the way (WebKit reports some as 1006).
 * Undefined for a code that closes nothing (the close code then decides).
 */
export function errorAction(code: ErrorCode): CloseAction | undefined {
  const close = closeCodeOf(code);
  return close === undefined ? undefined : closeAction(close);
}

/** The `retry` field of a fatal error frame: false exactly for 4500-4999, 1003 and 1009. */
export function closeRetries(code: number): boolean {
  return closeAction(code) !== "stop";
}

/**
 * An error that carries its code. Thrown inside an HTTP route it becomes a
 * JSON error response; thrown inside a socket handler it becomes an error
 * frame followed by the close (a "disconnect").
 */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Seconds, for Retry-After on 429/503. */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, options: { message?: string; retryAfter?: number; cause?: unknown } = {}) {
    const spec: ErrorSpec = ERRORS[code];
    super(options.message ?? MESSAGES[code], options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "GatewayError";
    this.code = code;
    this.status = spec.status ?? 500;
    this.retryAfter = options.retryAfter;
  }
}

export function isGatewayError(err: unknown): err is GatewayError {
  return err instanceof GatewayError;
}
