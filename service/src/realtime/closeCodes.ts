import { ERRORS, type ErrorSpec } from "../errors.js";

/**
 * The `code` label of a close, in metrics and in the `ws_close` log line.
 *
 * A client chooses its own close code (any of about 2,000), so taking it as
 * a label would let a client mint label values and fire the 1011 page. The
 * label is the code itself only for what the server sends (its own table)
 * and for the handful of codes every client uses; any other client code is
 * counted in a bucket of its range. `closed_by` says who closed, and the
 * 1011 alert counts `closed_by="server"` only.
 */
export type ClosedBy = "server" | "client";

const SERVER_CODES = new Set(Object.values(ERRORS as Record<string, ErrorSpec>).flatMap((spec) => (spec.close === undefined ? [] : [spec.close])));
/** Normal, going away, no status, abnormal: what browsers and libraries say on their own. */
const COMMON_CLIENT_CODES = new Set([1000, 1001, 1005, 1006]);

export function closeCodeLabel(code: number, closedBy: ClosedBy): string {
  if (closedBy === "server") return SERVER_CODES.has(code) || code === 1000 ? String(code) : "other";
  if (COMMON_CLIENT_CODES.has(code)) return String(code);
  if (code >= 1000 && code <= 2999) return "client_1xxx";
  if (code >= 3000 && code <= 3999) return "client_3xxx";
  if (code >= 4000 && code <= 4999) return "client_4xxx";
  return "client_other";
}
