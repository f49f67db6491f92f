import { ERRORS, type ErrorCode } from "../src/errors.js";
import type { StatusCode } from "./types.js";

/**
 * What a person reads in a status line. The gateway's messages (errors.ts)
 * are written for developers ("Get one from POST /api/v1/…"); these say what
 * is happening and what the client does about it. A code without an entry
 * here falls back to the message the gateway sent with it (the SDK does not
 * ship the gateway's messages: errors.ts keeps them apart, in MESSAGES), so a
 * code added to errors.ts is never shown as a bare identifier.
 */
const FRIENDLY: Partial<Record<StatusCode, string>> = {
  CONNECTING: "connecting…",
  CONNECTED: "connected",
  OFFLINE: "offline, waiting for the network…",
  NETWORK_ERROR: "can't reach the gateway, retrying…",
  CONNECTION_LOST: "connection lost, reconnecting…",
  CONNECT_TIMEOUT: "connection attempt timed out, retrying…",
  HEARTBEAT_TIMEOUT: "connection went quiet, reconnecting…",
  TICKET_TIMEOUT: "ticket request timed out, retrying…",
  TOKEN_UNAVAILABLE: "couldn't get a sign-in token, retrying…",
  HTTP_ERROR: "the gateway answered with an error, retrying…",
  STREAM_GAP: "missed events were not replayed, reconnecting…",
  CLOSED_BY_APP: "disconnected",

  TOKEN_MISSING: "not signed in, retrying…",
  TOKEN_INVALID: "sign-in not accepted, renewing…",
  TOKEN_EXPIRED: "sign-in expired, renewing…",
  TOKEN_REVOKED: "sign-in revoked, renewing…",
  ORIGIN_FORBIDDEN: "origin not allowed",
  RATE_LIMITED: "too many requests, retrying later…",
  TICKET_STORE_UNAVAILABLE: "gateway storage unavailable, retrying…",
  AUTH_UNAVAILABLE: "sign-in keys unreachable, retrying…",
  TICKET_MISSING: "ticket missing, renewing…",
  TICKET_MALFORMED: "ticket malformed, renewing…",
  TICKET_INVALID: "ticket not recognised, renewing…",
  TICKET_EXPIRED: "ticket expired, renewing…",
  TICKET_USED: "ticket already used, renewing…",
  SESSION_EXPIRED: "session expired, signing in again…",
  TOO_MANY_CONNECTIONS: "too many open connections, retrying later…",
  SLOW_CONSUMER: "connection too slow, reconnecting…",
  SESSION_REVOKED: "signed out: session revoked",
  SERVICE_RESTART: "gateway restarting, reconnecting…",
  CONNECTION_AGE: "renewing a long-lived connection…",
  MESSAGE_TOO_BIG: "stopped: a message was too large for the gateway",
  UNSUPPORTED_DATA: "stopped: the gateway refused binary data",
  INTERNAL_ERROR: "gateway error, retrying…",
  HISTORY_UNAVAILABLE: "missed events are no longer available; reloaded",
};

export function isErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERRORS, code);
}

/** The human reason for a code; `fallback` (the gateway's own message, when it sent one) for codes without words here. */
export function describe(code: string, fallback = "disconnected"): string {
  return FRIENDLY[code as StatusCode] ?? fallback;
}
