/**
 * `npm run dev`: the gateway on :8080 with the embedded store, and the demo
 * page with its sign-in stand-in on :3000. Nothing to install, nothing to
 * configure; GATEWAY_PORT, DEV_PORT and METRICS_PORT move the ports.
 * Never a deployment: the keys are dev keys kept in the git-ignored .tmp/
 * (so open pages survive a restart), and the stand-in mints a token for any
 * user id.
 */
import { relative } from "node:path";
import { DEFAULT_DEV_KEYS_FILE, loadDevKeys } from "./keys.js";
import { watchLauncher } from "./parentWatch.js";
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

const keysFile = process.env.DEV_KEYS_FILE || DEFAULT_DEV_KEYS_FILE;
const stack = await startDevStack({
  gatewayPort: port("GATEWAY_PORT", 8080),
  devPort: port("DEV_PORT", 3000),
  metricsPort: port("METRICS_PORT", 9464),
  agentStepDelayMs: process.env.AGENT_STEP_DELAY_MS === undefined ? undefined : Number(process.env.AGENT_STEP_DELAY_MS),
  logLevel: process.env.LOG_LEVEL,
  keys: loadDevKeys(keysFile),
}).catch((err: unknown) => {
  process.stderr.write(`npm run dev: could not start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
process.stdout.write(
  [
    "",
    `  ${bold("Chat gateway: development mode")} (embedded store, dev keys in ${relative(process.cwd(), keysFile)})`,
    "",
    `  Open ${bold(stack.pageUrl)} and sign in (user ids: letters, digits and . _ @ + -, up to 64).`,
    `  Gateway: ${stack.gatewayUrl}   (allows the origin ${stack.pageUrl} only: open the page by that exact URL)`,
    `  Agent backend (service/examples/agent): ${stack.agent.webhookUrl}   (chat messages are handed to it by signed webhook)`,
    "",
    "  Publish an agent event to a signed-in user through the internal API:",
    "  replace alice with the user id you signed in as (the page shows it under Account).",
    "  DEV ONLY: this service secret is a dev key kept with the JWT key; delete that file for new ones.",
    "",
    `    curl -sS -X POST ${stack.gatewayUrl}/internal/v1/users/alice/events \\`,
    `      -H 'Authorization: Bearer ${stack.serviceSecret}' \\`,
    "      -H 'X-Service-Id: dev-curl' -H 'Content-Type: application/json' \\",
    `      -d '{"type":"agent_thinking","run_id":"curl-run","thread_id":"curl","data":{"text":"Hello from curl"}}'`,
    "",
    "  Ctrl-C stops both servers (so does SIGTERM to this process or to npm).",
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
// npm does not pass a SIGTERM on to its script: stop when npm (or whatever started this) is gone.
watchLauncher((why) => {
  process.stdout.write(`\nnpm run dev: ${why}; stopping\n`);
  stop("SIGTERM");
});
