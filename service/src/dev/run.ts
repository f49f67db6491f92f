/**
 * `npm run dev`: the gateway on :8080 with the embedded store and ephemeral
 * keys, and the demo page with its sign-in stand-in on :3000. Nothing to
 * install, nothing to configure; GATEWAY_PORT and DEV_PORT move the ports.
 * Never a deployment: the keys die with the process, and the stand-in mints
 * a token for any user id.
 */
import { startDevStack } from "./stack.js";

function port(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    process.stderr.write(`${name} must be a port number; got "${raw}"\n`);
    process.exit(1);
  }
  return n;
}

const stack = await startDevStack({
  gatewayPort: port("GATEWAY_PORT", 8080),
  devPort: port("DEV_PORT", 3000),
  metricsPort: port("METRICS_PORT", 9464),
  agentStepDelayMs: process.env.AGENT_STEP_DELAY_MS === undefined ? undefined : Number(process.env.AGENT_STEP_DELAY_MS),
  logLevel: process.env.LOG_LEVEL,
}).catch((err: unknown) => {
  process.stderr.write(`npm run dev: could not start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
process.stdout.write(
  [
    "",
    `  ${bold("Chat gateway: development mode")} (embedded store, ephemeral keys)`,
    "",
    `  Open ${bold(stack.pageUrl)} and sign in as any user id.`,
    `  Gateway: ${stack.gatewayUrl}   (allows the origin ${stack.pageUrl} only)`,
    "",
    "  Publish an agent event through the internal API.",
    "  DEV ONLY: this service secret was generated at start and dies with this process.",
    "",
    `    curl -sS -X POST ${stack.gatewayUrl}/internal/v1/users/alice/events \\`,
    `      -H 'Authorization: Bearer ${stack.serviceSecret}' \\`,
    "      -H 'X-Service-Id: dev-curl' -H 'Content-Type: application/json' \\",
    `      -d '{"type":"agent_thinking","run_id":"curl-run","thread_id":"curl","data":{"text":"Hello from curl"}}'`,
    "",
    "  Ctrl-C stops both servers.",
    "",
    "",
  ].join("\n"),
);

let stopping = false;
function stop(signal: NodeJS.Signals): void {
  if (stopping) {
    process.stderr.write("second signal: exiting now\n");
    process.exit(1);
  }
  stopping = true;
  process.stdout.write(`\n${signal}: closing the gateway (open pages get 4012 and reconnect when it is back) and the dev server…\n`);
  stack.close().then(
    () => {
      stack.gateway.logger.flush(() => process.exit(0));
    },
    (err: unknown) => {
      process.stderr.write(`shutdown failed: ${String(err)}\n`);
      process.exit(1);
    },
  );
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
