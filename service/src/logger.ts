import { pino, type DestinationStream, type Logger } from "pino";

/**
 * JSON lines for Cloud Logging: `severity` instead of pino's numeric level,
 * and `message` as the text field, so log-based metrics and alerts can read
 * `jsonPayload.event` directly.
 *
 * Tickets and tokens must never reach a log line: URLs are logged through
 * `redactUrl`, and the fields that could carry credentials are censored.
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

const CREDENTIAL_PARAMS = /([?&](?:ticket|token|access_token|jwt)=)[^&#]*/gi;

/** `/ws?ticket=abc&x=1` → `/ws?ticket=[REDACTED]&x=1`. */
export function redactUrl(url: string): string {
  return url.replace(CREDENTIAL_PARAMS, "$1[REDACTED]");
}
