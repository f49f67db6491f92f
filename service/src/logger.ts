import { pino, type DestinationStream, type Logger } from "pino";

/**
 * JSON lines for Cloud Logging: `severity` instead of pino's numeric level,
 * and `message` as the text field, so log-based metrics and alerts can read
 * `jsonPayload.event` directly.
 *
 * Tickets and tokens must never reach a log line: a request is logged by its
 * route pattern (`logPath`), never its raw URL, and the fields that could carry credentials are censored.
 */
const SEVERITY: Record<string, string> = {
  trace: "DEBUG",
  debug: "DEBUG",
  info: "INFO",
  warn: "WARNING",
  error: "ERROR",
  fatal: "CRITICAL",
};

export type { Logger };

export function createLogger(options: { level?: string; destination?: DestinationStream; base?: Record<string, unknown> } = {}): Logger {
  // An asynchronous destination: a synchronous write per connection costs real
  // throughput. main.ts flushes it before the process exits.
  const destination = options.destination ?? pino.destination({ sync: false });
  return pino(
    {
      level: options.level ?? "info",
      messageKey: "message",
      base: options.base ?? {},
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ severity: SEVERITY[label] ?? "DEFAULT" }) },
      redact: {
        paths: [
          "req.headers.authorization",
          "req.headers.cookie",
          'req.headers["sec-websocket-protocol"]',
          "headers.authorization",
          "*.token",
          "*.ticket",
          "*.password",
          "*.secret",
        ],
        censor: "[REDACTED]",
      },
      serializers: {
        err: pino.stdSerializers.err,
      },
    },
    destination,
  );
}

/**
 * What a log line says about a request's URL: the pattern of the route it
 * matched (`/ws`, `/internal/v1/users/:user_id/events`), never the raw URL.
 * A credential can hide under any query name (`?id_token=`, `?auth=`,
 * `ticket[]`, `ticket%5B%5D`) or in the path itself (`/ws/<ticket>`), so no
 * deny-list of names is safe: no part of the path or query the client chose
 * reaches a log. An unmatched request logs as "(no route)".
 */
export function logPath(request: { readonly routeOptions: { readonly url?: string } }): string {
  return request.routeOptions.url ?? "(no route)";
}
