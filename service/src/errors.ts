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
  TOKEN_MISSING: { status: 401, message: "No bearer token. Send Authorization: Bearer <user JWT>." },
  TOKEN_INVALID: { status: 401, message: "The user token is not valid (signature, claims, algorithm or shape)." },
  TOKEN_EXPIRED: { status: 401, message: "The user token has expired. Get a fresh one from the auth service." },
  TOKEN_REVOKED: { status: 401, message: "The user token was issued before the user's sessions were revoked. Sign in again." },
  ORIGIN_FORBIDDEN: { status: 403, close: 4500, message: "This origin is not allowed to use the gateway." },
  RATE_LIMITED: { status: 429, close: 4429, message: "Too many requests. Slow down and retry after the delay." },
  TICKET_STORE_UNAVAILABLE: { status: 503, close: 4013, message: "The ticket store is unavailable. Retry shortly." },
  // The auth service's keys (AUTH_JWKS_URL) cannot be had: the token is not at fault, so no 401 (which sends the
  // client for a new token). Also a non-fatal frame answering refresh_session, with `retry_after` in seconds.
  AUTH_UNAVAILABLE: { status: 503, frame: true, message: "User tokens cannot be checked right now (the auth service's keys are unreachable). Retry after the delay with the same token." },

  // ── Generic HTTP ──
  BAD_REQUEST: { status: 400, message: "The request is malformed." },
  BODY_TOO_LARGE: { status: 413, message: "The request body is too large." },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: "Send the body as application/json." },
  REQUEST_TIMEOUT: { status: 408, message: "The request was not received in time." },
  HEADERS_TOO_LARGE: { status: 431, message: "The request headers are too large." },
  NOT_FOUND: { status: 404, message: "No such route." },
  UPGRADE_REQUIRED: { status: 426, message: "This endpoint speaks WebSocket only: open it with new WebSocket(url)." },
  SERVICE_UNAUTHORIZED: { status: 401, message: "Internal API: send Authorization: Bearer <SERVICE_SECRET> and X-Service-Id." },

  // ── WebSocket: reconnect with a new ticket (4000-4499) ──
  TICKET_MISSING: { close: 4400, message: "No ticket. Get one from POST /api/v1/auth/websocket_ticket and open /ws?ticket=…" },
  TICKET_MALFORMED: { close: 4400, message: "That is not a ticket's shape. Get a new ticket." },
  TICKET_INVALID: { close: 4401, message: "Unknown ticket. Get a new ticket." },
  TICKET_EXPIRED: { close: 4401, message: "The ticket expired before it was used. Get a new ticket." },
  TICKET_USED: { close: 4401, message: "The ticket was already used; tickets are single-use. Get a new ticket." },
  SESSION_EXPIRED: { close: 4408, message: "The user token behind this connection expired. Get a fresh token, then a ticket." },
  // 4012 and 4013: Service Restart and Try Again Later, in the range every engine passes to the page.
  SERVICE_RESTART: { close: 4012, message: "The gateway instance is restarting. Reconnect and resume." },
  CONNECTION_AGE: { close: 4012, message: "The connection reached its maximum age. Reconnect and resume." },
  TOO_MANY_CONNECTIONS: { close: 4429, message: "Too many open connections for this user." },
  SLOW_CONSUMER: { close: 4429, message: "The client reads too slowly. Reconnect and resume." },

  // ── WebSocket: stop, do not reconnect (4500-4999) ──
  SESSION_REVOKED: { close: 4501, message: "The session was revoked. Sign in again." },

  // ── WebSocket: standard codes ──
  MESSAGE_TOO_BIG: { close: 1009, message: "The frame is larger than the gateway accepts." },
  UNSUPPORTED_DATA: { close: 1003, message: "Binary frames are not supported; send JSON text frames." },
  INTERNAL_ERROR: { status: 500, close: 1011, message: "Unexpected server error. Reconnect with backoff." },

  // ── Non-fatal error frames: the socket stays open ──
  MESSAGE_MALFORMED: { frame: true, message: "The frame is not valid JSON." },
  MESSAGE_INVALID: { frame: true, message: "The frame does not match the schema of its type." },
  UNKNOWN_TYPE: { frame: true, message: "Unknown frame type." },
  // TOKEN_INVALID is also sent as a non-fatal frame when refresh_session fails.
  // chat_message hand-off to the agent backend (§5a); each names the message_id.
  // RATE_LIMITED and TICKET_STORE_UNAVAILABLE are also sent as non-fatal "not accepted" frames.
  AGENT_UNAVAILABLE: { frame: true, message: "The agent backend did not accept the message in time. It was not acked; send it again shortly." },
  MESSAGE_REJECTED: { frame: true, message: "The agent backend refused the message. Do not send it again." },
  CHAT_UNAVAILABLE: { frame: true, message: "Chat is not available on this gateway (no agent backend is configured)." },

  // ── resync_required code ──
  HISTORY_UNAVAILABLE: { frame: true, message: "The history no longer covers the gap. Reload state." },
} as const satisfies Record<string, ErrorSpec>;

export interface ErrorSpec {
  readonly status?: number;
  readonly close?: number;
  readonly frame?: boolean;
  readonly message: string;
}

export type ErrorCode = keyof typeof ERRORS;

/** The close code of an error, or undefined for codes that never close a socket. */
export function closeCodeOf(code: ErrorCode): number | undefined {
  return (ERRORS[code] as ErrorSpec).close;
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
  readonly close: number;
  /** Seconds, for Retry-After on 429/503. */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, options: { message?: string; retryAfter?: number; cause?: unknown } = {}) {
    const spec: ErrorSpec = ERRORS[code];
    super(options.message ?? spec.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "GatewayError";
    this.code = code;
    this.status = spec.status ?? 500;
    this.close = spec.close ?? 1011;
    this.retryAfter = options.retryAfter;
  }
}

export function isGatewayError(err: unknown): err is GatewayError {
  return err instanceof GatewayError;
}
