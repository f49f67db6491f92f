/**
 * The example agent backend as a process (the integration test kills and
 * restarts it). Settings from the environment:
 *   GATEWAY_URL, SERVICE_SECRET, AGENT_WEBHOOK_SECRET (whsec_…)  required
 *   AGENT_WEBHOOK_SECRET_PREVIOUS: a second key that also verifies, during a rotation
 *   AGENT_PORT (default 8090), AGENT_HOST (127.0.0.1), AGENT_STEP_DELAY_MS (400)
 *   AGENT_REDIS_URL: remember webhook ids in Redis, across restarts (default: in memory)
 * Prints one line `listening <webhook url>` when ready.
 */
import { startExampleAgent } from "./agent.js";
import { createMemoryDedup, createRedisDedup } from "./dedup.js";

const env = process.env;
const missing = ["GATEWAY_URL", "SERVICE_SECRET", "AGENT_WEBHOOK_SECRET"].filter((name) => !env[name]);
if (missing.length > 0) {
  process.stderr.write(`example agent: missing ${missing.join(", ")}\n`);
  process.exit(1);
}

const agent = await startExampleAgent({
  gatewayUrl: env.GATEWAY_URL!,
  serviceSecret: env.SERVICE_SECRET!,
  webhookSecret: env.AGENT_WEBHOOK_SECRET!,
  webhookSecretPrevious: env.AGENT_WEBHOOK_SECRET_PREVIOUS || undefined,
  port: Number(env.AGENT_PORT ?? 8090),
  host: env.AGENT_HOST ?? "127.0.0.1",
  stepDelayMs: Number(env.AGENT_STEP_DELAY_MS ?? 400),
  dedup: env.AGENT_REDIS_URL ? createRedisDedup(env.AGENT_REDIS_URL) : createMemoryDedup(),
});
process.stdout.write(`listening ${agent.webhookUrl}\n`);

const stop = () => {
  agent.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
