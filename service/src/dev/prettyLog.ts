/**
 * Log lines for a person at a terminal: the gateway's logger (with its
 * redaction of tickets and tokens) writes its JSON lines here, and each
 * becomes `12:00:01.234 INFO  message  key=value …`. Development only;
 * production keeps the JSON lines Cloud Logging reads.
 */
import type { DestinationStream } from "pino";

const COLORS: Record<string, string> = { DEBUG: "\x1b[90m", INFO: "\x1b[36m", WARNING: "\x1b[33m", ERROR: "\x1b[31m", CRITICAL: "\x1b[41m" };
const RESET = "\x1b[0m";
const DIM = "\x1b[2m";
const HIDDEN = new Set(["severity", "time", "message", "service", "err"]);

export function prettyDestination(out: NodeJS.WritableStream = process.stdout, color = Boolean((out as { isTTY?: boolean }).isTTY)): DestinationStream {
  const paint = (code: string | undefined, text: string) => (color && code ? `${code}${text}${RESET}` : text);
  return {
    write(line: string): void {
      for (const raw of line.split("\n")) {
        if (raw.trim() === "") continue;
        let record: Record<string, unknown>;
        try {
          record = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          out.write(`${raw}\n`);
          continue;
        }
        // Fastify's "Server listening at http://127.0.0.1:3000": a page opened by that URL has an origin the
        // gateway does not allow. The banner prints the URLs that work; these would only mislead.
        if (typeof record.message === "string" && record.message.startsWith("Server listening at ")) continue;
        const time = typeof record.time === "string" ? record.time.slice(11, 23) : "";
        const severity = String(record.severity ?? "INFO");
        const fields = Object.entries(record)
          .filter(([k]) => !HIDDEN.has(k))
          .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
          .join(" ");
        const err = record.err as { message?: string; stack?: string } | undefined;
        out.write(
          `${paint(DIM, time)} ${paint(COLORS[severity], severity.padEnd(7))} ${String(record.message ?? "")}${fields ? `  ${paint(DIM, fields)}` : ""}\n` +
            (err ? `${paint(COLORS.ERROR, err.stack ?? err.message ?? "")}\n` : ""),
        );
      }
    },
  };
}
