import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { parseStackConfig, parseStackSecrets, StackConfigError } from "../../infra/config.js";
import { containerEnv, isSecretValue, plain, PROJECT, resolve, runProgram, stackConfig, T, TEST_JWT_SECRET } from "./harness.js";

/**
 * The chat hand-off's deployment (docs/protocol.md §5a): the `agentWebhookUrl`
 * stack setting becomes AGENT_WEBHOOK_URL, and its key lives in Secret
 * Manager as `<serviceId>-agent-webhook-secret`, readable by the gateway's
 * identity only, like every other secret.
 */
const URL_OK = "https://agent.example.com/webhook";
const source = (overrides: Record<string, string | undefined>) => {
  const config = stackConfig("staging", overrides);
  return (key: string) => config[`${PROJECT}:${key}`];
};
const problemsOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StackConfigError);
    return (err as StackConfigError).problems.join("\n");
  }
  throw new Error("expected a StackConfigError");
};
const webhookVersion = (r: Awaited<ReturnType<typeof runProgram>>) =>
  r.ofType(T.secretVersion).find((v) => String(v.inputs.secret).endsWith("/chat-gateway-agent-webhook-secret"));

describe("agentWebhookUrl", () => {
  it("is optional: without it the gateway gets no AGENT_WEBHOOK_URL and the webhook secret no version", async () => {
    const r = await runProgram("staging");
    expect(containerEnv(r).AGENT_WEBHOOK_URL).toBeUndefined();
    expect(webhookVersion(r)).toBeUndefined();
    expect(r.ofType(T.secret).map((s) => s.inputs.secretId)).toContain("chat-gateway-agent-webhook-secret");
  });

  it.each([
    ["http://agent.example.com/webhook", /agentWebhookUrl must use https/],
    ["ftp://agent.example.com/webhook", /agentWebhookUrl must use https/],
    ["not a url", /agentWebhookUrl must be a URL/],
    ["https://user:pw@agent.example.com/webhook", /agentWebhookUrl must not carry credentials/],
  ])("refuses %s, as the gateway would in production", (url, reason) => {
    expect(problemsOf(() => parseStackConfig(source({ agentWebhookUrl: url }), "staging"))).toMatch(reason);
  });

  it("takes https, and plain http to a loopback address (an agent sidecar in the same instance)", () => {
    for (const url of [URL_OK, "http://127.0.0.1:8090/webhook", "http://localhost:8090/webhook"]) {
      expect(parseStackConfig(source({ agentWebhookUrl: url }), "staging").agentWebhookUrl).toBe(url);
    }
  });

  it("reaches the gateway as AGENT_WEBHOOK_URL, with a generated whsec_ key in Secret Manager that only the gateway's identity reads", async () => {
    const r = await runProgram("staging", { agentWebhookUrl: URL_OK });
    expect(containerEnv(r).AGENT_WEBHOOK_URL).toBe(URL_OK);
    // The key is a secret, never a plain env value.
    expect(Object.values(containerEnv(r)).some((v) => v?.startsWith("whsec_"))).toBe(false);
    const version = webhookVersion(r)!;
    expect(isSecretValue(version.inputs.secretData)).toBe(true);
    expect(plain(version.inputs.secretData)).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(r.one(T.bytes).inputs.length).toBe(32);
    const grants = r.ofType(T.secretIam).filter((g) => String(g.inputs.secretId).endsWith("/chat-gateway-agent-webhook-secret"));
    expect(grants).toHaveLength(1);
    expect(grants[0]!.inputs.role).toBe("roles/secretmanager.secretAccessor");
    expect(grants[0]!.inputs.member).toBe(`serviceAccount:chat-gateway-run@${r.config[`${PROJECT}:project`]}.iam.gserviceaccount.com`);
  });

  it("uses the key set with pulumi config set --secret agentWebhookSecret, shared with the agent backend", async () => {
    const key = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
    const r = await runProgram("staging", { agentWebhookUrl: URL_OK, agentWebhookSecret: key });
    expect(plain(webhookVersion(r)!.inputs.secretData)).toBe(key);
    expect(r.ofType(T.bytes)).toHaveLength(0);
  });

  it("refuses an agentWebhookSecret that is not whsec_ + base64 of 24 to 64 bytes, and keeps a good one secret", async () => {
    const secrets = (value: string) => (k: string) => (k === "jwtSecretKey" ? TEST_JWT_SECRET : k === "agentWebhookSecret" ? value : undefined);
    expect(problemsOf(() => parseStackSecrets(secrets("not-a-key"), "staging"))).toMatch(/agentWebhookSecret must be whsec_/);
    expect(problemsOf(() => parseStackSecrets(secrets(`whsec_${Buffer.alloc(8).toString("base64")}`), "staging"))).toMatch(/agentWebhookSecret/);
    const good = parseStackSecrets(secrets(`whsec_${Buffer.alloc(32, 1).toString("base64")}`), "staging");
    expect(await pulumi.isSecret(good.agentWebhookSecret!)).toBe(true);
    expect(await resolve(good.agentWebhookSecret)).toMatch(/^whsec_/);
  });
});
