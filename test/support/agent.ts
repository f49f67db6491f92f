import { startExampleAgent, type ExampleAgent } from "../../service/examples/agent/agent.js";
import type { Dedup } from "../../service/examples/agent/dedup.js";
import { TEST_SERVICE_SECRET } from "./gateway.js";

/** The test webhook key (Standard Webhooks form: whsec_ + base64 of 32 bytes); tests sign and verify with it, nothing is bypassed. */
export const TEST_WEBHOOK_SECRET = `whsec_${Buffer.alloc(32, 0x5a).toString("base64")}`;

export interface TestAgent {
  readonly agent: ExampleAgent;
  /** The gateway settings that hand chat messages to this agent. */
  readonly env: { AGENT_WEBHOOK_URL: string; AGENT_WEBHOOK_SECRET: string };
  /** Where the agent publishes its runs' events (set once the gateway is up). */
  pointAt(gateway: { url: string }): void;
  close(): Promise<void>;
}

/** The example agent backend on a free loopback port, publishing with the test service secret. */
export async function startTestAgent(options: { stepDelayMs?: number; dedup?: Dedup; port?: number } = {}): Promise<TestAgent> {
  let gatewayUrl = "";
  const agent = await startExampleAgent({
    gatewayUrl: () => gatewayUrl,
    serviceSecret: TEST_SERVICE_SECRET,
    webhookSecret: TEST_WEBHOOK_SECRET,
    stepDelayMs: options.stepDelayMs ?? 0,
    dedup: options.dedup,
    port: options.port,
    log: () => undefined,
  });
  return {
    agent,
    env: { AGENT_WEBHOOK_URL: agent.webhookUrl, AGENT_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET },
    pointAt(gateway) {
      gatewayUrl = gateway.url;
    },
    close: () => agent.close(),
  };
}
