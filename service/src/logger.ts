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

const CREDENTIAL_PARAMS = new Set(["ticket", "token", "access_token", "jwt"]);

/**
 * `/ws?ticket=abc&x=1` → `/ws?ticket=[REDACTED]&x=1`. Parameters are found the
 * way the router reads them, or a credential the route did read could be
 * logged: the query starts at the first `?` or `#` (find-my-way), and a
 * name's `+` and `%xx` are decoded (fast-querystring), so `/ws#ticket=…` and
 * `/ws?%74icket=…` are redacted too.
 */
export function redactUrl(url: string): string {
  const start = url.search(/[?#]/);
  if (start < 0) return url;
  const pairs = url
    .slice(start + 1)
    .split("&")
    .map((pair) => {
      const eq = pair.indexOf("=");
      if (eq < 0) return pair;
      const name = pair.slice(0, eq);
      return CREDENTIAL_PARAMS.has(decodeParamName(name).toLowerCase()) ? `${name}=[REDACTED]` : pair;
    });
  return `${url.slice(0, start + 1)}${pairs.join("&")}`;
}

function decodeParamName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, " "));
  } catch {
    return name;
  }
}
