/**
 * The example agent backend during a rotation of the webhook secret
 * (docs/operations.md, "Rotate the agent webhook secret"): with
 * AGENT_WEBHOOK_SECRET_PREVIOUS it verifies a hand-off signed with either key,
 * since the gateway's instances move from the old key to the new one at a
 * time; anything else is still refused, and without the second key the old
 * one is refused. Real HTTP, a real gateway for the run's first event.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startExampleAgent, type ExampleAgent } from "../../service/examples/agent/agent.js";
import { startGateway, TEST_SERVICE_SECRET, type TestGateway } from "../support/gateway.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";

const key = () => `whsec_${randomBytes(32).toString("base64")}`;
const [OLD, NEW, STRANGER] = [key(), key(), key()];

let redis: RedisServerHandle;
let gateway: TestGateway;
const agents: ExampleAgent[] = [];

beforeAll(async () => {
  redis = await startRedis();
  gateway = await startGateway({ env: { REDIS_URL: redis.url } });
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await gateway?.close();
  await redis?.stop();
});

async function agentWith(webhookSecret: string, webhookSecretPrevious?: string): Promise<ExampleAgent> {
  const agent = await startExampleAgent({ gatewayUrl: gateway.url, serviceSecret: TEST_SERVICE_SECRET, webhookSecret, webhookSecretPrevious, stepDelayMs: 0, log: () => undefined });
  agents.push(agent);
  return agent;
}

/** A hand-off as the gateway sends it, signed with `secrets` (several: space-separated signatures). */
async function handOff(agent: ExampleAgent, ...secrets: string[]): Promise<number> {
  const id = `msg-${randomUUID()}`;
  const body = JSON.stringify({ message_id: id, user_id: `u-${randomUUID()}`, thread_id: "t", text: "hello", received_at: new Date().toISOString(), connection_id: "c" });
  const at = new Date();
  const signature = secrets.map((s) => new Webhook(s).sign(id, at, body)).join(" ");
  const res = await fetch(agent.webhookUrl, {
    method: "POST",
    headers: { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": signature },
    body,
  });
  await res.body?.cancel();
  return res.status;
}

describe("example agent: the webhook secret rotates", () => {
  it("during the rotation, accepts a hand-off signed with the old key and one signed with the new key", async () => {
    const agent = await agentWith(NEW, OLD);
    expect(await handOff(agent, OLD)).toBe(202);
    expect(await handOff(agent, NEW)).toBe(202);
  });

  it("attack: during the rotation, a hand-off signed with any other key is still refused (401), as is an unsigned one", async () => {
    const agent = await agentWith(NEW, OLD);
    expect(await handOff(agent, STRANGER)).toBe(401);
    expect(await handOff(agent)).toBe(401);
  });

  it("after the rotation (the second key dropped), the old key is refused and the new one accepted", async () => {
    const agent = await agentWith(NEW);
    expect(await handOff(agent, OLD)).toBe(401);
    expect(await handOff(agent, NEW)).toBe(202);
    // Several signatures, one by a held key: accepted (Standard Webhooks).
    expect(await handOff(agent, STRANGER, NEW)).toBe(202);
  });
});
