import { closeRetries, MESSAGES, socketCloseCode, type ErrorCode } from "../errors.js";
import { MAX_ID_LENGTH } from "../protocol.js";

/**
 * Client → server frames (docs/protocol.md §4), validated by hand: four small
 * shapes do not need a schema compiler. `parseClientFrame` never throws; it
 * returns the frame or the non-fatal error code to answer with.
 */
export type ClientFrame =
  | { type: "ping"; id?: string | number }
  | { type: "chat_message"; message_id: string; thread_id: string; text: string }
  | { type: "resume"; last_seq: number; epoch?: string }
  | { type: "refresh_session"; token: string };

export function parseClientFrame(text: string): ClientFrame | { error: "MESSAGE_MALFORMED" | "MESSAGE_INVALID" | "UNKNOWN_TYPE"; detail: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { error: "MESSAGE_MALFORMED", detail: "not JSON" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { error: "MESSAGE_INVALID", detail: "a frame is a JSON object" };
  const f = value as Record<string, unknown>;
  const invalid = (detail: string) => ({ error: "MESSAGE_INVALID" as const, detail });
  switch (f.type) {
    case "ping":
      if (f.id !== undefined && !isId(f.id) && !(typeof f.id === "number" && Number.isFinite(f.id))) return invalid("ping.id must be a short string or a number");
      return f.id === undefined ? { type: "ping" } : { type: "ping", id: f.id as string | number };
    case "chat_message":
      if (!isId(f.message_id)) return invalid(`chat_message.message_id must be a string of 1 to ${MAX_ID_LENGTH} characters`);
      if (!isId(f.thread_id)) return invalid(`chat_message.thread_id must be a string of 1 to ${MAX_ID_LENGTH} characters`);
      if (typeof f.text !== "string" || f.text.trim().length === 0) return invalid("chat_message.text must be a non-empty string");
      return { type: "chat_message", message_id: f.message_id, thread_id: f.thread_id, text: f.text };
    case "resume":
      if (typeof f.last_seq !== "number" || !Number.isSafeInteger(f.last_seq) || f.last_seq < 0) return invalid("resume.last_seq must be an integer ≥ 0");
      if (f.epoch !== undefined && !isId(f.epoch)) return invalid("resume.epoch must be the epoch string the gateway sent");
      return f.epoch === undefined ? { type: "resume", last_seq: f.last_seq } : { type: "resume", last_seq: f.last_seq, epoch: f.epoch as string };
    case "refresh_session":
      if (typeof f.token !== "string" || f.token.length === 0) return invalid("refresh_session.token must be a JWT");
      return { type: "refresh_session", token: f.token };
    default:
      return typeof f.type === "string" ? { error: "UNKNOWN_TYPE", detail: "unknown frame type" } : invalid("a frame needs a string type");
  }
}

function isId(v: unknown): v is string {
  return typeof v === "string" && v.length > 0 && v.length <= MAX_ID_LENGTH;
}

/** `{"type":"error",…}`: fatal frames carry `retry` (from the close code that follows), non-fatal ones do not. */
export function errorFrame(code: ErrorCode, options: { fatal: boolean; message?: string; extra?: Record<string, unknown> }): string {
  const frame: Record<string, unknown> = { type: "error", code, message: options.message ?? MESSAGES[code], fatal: options.fatal };
  if (options.fatal) frame.retry = closeRetries(socketCloseCode(code));
  return JSON.stringify({ ...frame, ...options.extra });
}
