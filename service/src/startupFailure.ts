/**
 * How `npm start` reports a startup it could not finish. Cloud Logging reads
 * one JSON line per record, so a message with line breaks is one JSON line
 * there (its `\n` escaped). A person at a terminal would read those escapes
 * literally, so a terminal gets the same problems as plain lines instead.
 */
export interface StartupFailureTarget {
  /** stderr is a terminal. */
  readonly tty: boolean;
  /** NODE_ENV=production: the JSON line is written even at a terminal (log collectors may sit behind a pty). */
  readonly production: boolean;
}

export function formatStartupFailure(text: string, target: StartupFailureTarget): string {
  const json = `${JSON.stringify({ severity: "CRITICAL", event: "startup_failed", message: text })}\n`;
  if (!target.tty) return json;
  const readable = `chat-gateway did not start.\n${text}\n`;
  return target.production ? `${json}${readable}` : readable;
}
