import { spawnSync } from "node:child_process";
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { parseStackConfig, parseStackSecrets, StackConfigError, type ConfigSource } from "../../infra/config.js";
import { INSTANCE_SHAPE, PROJECT, readYaml, resolve, ROOT, runProgram, STACKS, stackConfig, stackFile, TEST_JWT_SECRET, type StackName } from "./harness.js";

/** The stack file's settings as Pulumi hands them to the program, with overrides (undefined removes a key). */
function source(stack: StackName, overrides: Record<string, string | undefined> = {}): ConfigSource {
  const config = stackConfig(stack, overrides);
  return (key) => config[`${PROJECT}:${key}`];
}

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StackConfigError);
    return (err as StackConfigError).problems;
  }
  throw new Error("expected a StackConfigError");
}

describe("the example stack files", () => {
  it.each(STACKS)("Pulumi.%s.yaml passes every check", (stack) => {
    expect(() => parseStackConfig(source(stack), stack)).not.toThrow();
  });

  it("every key in the stack files is a setting the program reads", () => {
    const known = new Set([
      "project", "region", "serviceId", "image", "domain", "alertEmails", "allowedOrigins", "redisTier", "redisSizeGb",
      "redisVersion", "minInstances", "maxInstances", "concurrency", "cpu", "memory", "subnetCidr", "deletionProtection",
      "runbookBaseUrl", "logLevel", "redisMode", "redisShardCount", "redisReplicaCount", "redisNodeType", "redisPscSubnetCidr", "jwtIssuer", "jwtAudience", "ticketEdgeRateLimitPerMinute", "authFailureRatioAlert",
      "http5xxRatioAlert", "internalErrorClosesAlert",
    ]);
    for (const stack of STACKS) {
      for (const key of Object.keys(stackFile(stack))) {
        const [namespace, name] = key.split(":");
        expect(namespace, key).toBe(PROJECT);
        expect(known.has(name ?? ""), `${key} in Pulumi.${stack}.yaml`).toBe(true);
      }
    }
  });

  // docs/operations.md step 2 runs this file against the operator's real values: check shape, not example-ness.
  it("production has its own project and domain, HA Redis, warm instances and deletion protection", () => {
    const staging = parseStackConfig(source("staging"), "staging");
    const production = parseStackConfig(source("production"), "production");
    expect(production.project).not.toBe(staging.project);
    expect(production.domain).not.toBe(staging.domain);
    for (const c of [staging, production]) {
      expect(c.project).toMatch(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/);
      expect(c.domain).toMatch(/^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/);
      expect(c.runbookBaseUrl).toMatch(/^https:\/\/[^#]+$/);
      for (const origin of c.allowedOrigins) expect(origin).toMatch(/^https:\/\//);
    }
    expect(production.redisMode).toBe("cluster");
    expect(production.redisReplicaCount).toBeGreaterThanOrEqual(1);
    expect(production.minInstances).toBeGreaterThanOrEqual(1);
    expect(production.deletionProtection).toBe(true);
    expect(production.image).toMatch(/@sha256:[0-9a-f]{64}$/);
    expect(staging.redisMode).toBe("instance");
    expect(staging.redisTier).toBe("BASIC");
  });

  it("the stack files hold no secret", () => {
    for (const stack of STACKS) {
      const keys = Object.keys(stackFile(stack)).join(" ");
      expect(keys).not.toMatch(/secret|password|auth/i);
    }
  });
});

describe("out-of-range values throw with the reason", () => {
  const cases: [string, string | undefined, RegExp][] = [
    ["project", undefined, /project is required/],
    ["project", "Bad_Project", /project must be a GCP project id/],
    ["region", "europe", /region must be a GCP region/],
    ["serviceId", "a-service-id-that-is-far-too-long", /serviceId must be .*at most 20 characters/],
    ["image", "gateway", /image must be a registry image reference/],
    ["image", "europe-west1-docker.pkg.dev/p/r/gateway", /image must name a tag or a digest/],
    ["image", "europe-west1-docker.pkg.dev/p/r/gateway:latest", /must not use the :latest tag/],
    ["domain", "https://chat.example.com", /domain must be a lower-case host name/],
    ["alertEmails", undefined, /alertEmails is required/],
    ["alertEmails", '["not-an-address"]', /alertEmails entry "not-an-address" is not an e-mail address/],
    ["allowedOrigins", undefined, /allowedOrigins is required/],
    ["allowedOrigins", '["https://app.example.com/"]', /allowedOrigins entry "https:\/\/app.example.com\/" is not an exact origin/],
    // The gateway refuses a wildcard (service/src/settings.ts isExactOrigin): the stack must not deploy one.
    ["allowedOrigins", '["https://*.example.com"]', /allowedOrigins entry "https:\/\/\*.example.com" is not an exact origin/],
    ["redisTier", "PREMIUM", /redisTier must be one of BASIC, STANDARD_HA/],
    ["redisSizeGb", "0", /redisSizeGb must be an integer from 1 to 300/],
    ["redisSizeGb", "1.5", /redisSizeGb must be an integer from 1 to 300/],
    ["minInstances", "-1", /minInstances must be an integer from 0 to 100/],
    ["maxInstances", "0", /maxInstances must be an integer from 1 to 1000/],
    ["minInstances", "5", /minInstances \(5\) must not exceed maxInstances \(4\)/],
    ["concurrency", "1001", /concurrency must be an integer from 1 to 1000/],
    ["cpu", "3", /cpu must be one of 1, 2, 4, 6, 8/],
    ["memory", "1GB", /memory must be a Cloud Run memory limit/],
    ["subnetCidr", "10.8.0.0/28", /subnetCidr must be a \/16 to \/26 range/],
    ["subnetCidr", "10.8.0.300/24", /subnetCidr must be an IPv4 CIDR range/],
    ["deletionProtection", "yes", /deletionProtection must be true or false/],
    ["runbookBaseUrl", "http://example.com/ops.md", /runbookBaseUrl must be an https URL/],
    ["runbookBaseUrl", "https://example.com/ops.md#x", /without a #fragment/],
    ["logLevel", "verbose", /logLevel must be one of/],
    ["ticketEdgeRateLimitPerMinute", "5", /ticketEdgeRateLimitPerMinute must be an integer from 10 to 100000/],
    ["authFailureRatioAlert", "1", /authFailureRatioAlert must be a ratio between 0 and 1/],
    ["http5xxRatioAlert", "0", /http5xxRatioAlert must be a ratio between 0 and 1/],
    ["internalErrorClosesAlert", "0", /internalErrorClosesAlert must be an integer from 1/],
  ];
  it.each(cases)("%s = %j", (key, value, reason) => {
    const problems = problemsOf(() => parseStackConfig(source("staging", { [key]: value }), "staging"));
    expect(problems.join("\n")).toMatch(reason);
  });

  // `pulumi preview` prints these: each names the key, what is allowed and an example to copy.
  it.each(cases)("the error for %s = %j names the key, the allowed values and an example", (key, value) => {
    const problems = problemsOf(() => parseStackConfig(source("staging", { [key]: value }), "staging"));
    const problem = problems.find((p) => p.startsWith(key) || p.includes(` ${key} `) || p.includes(`${key} (`));
    expect(problem, problems.join("\n")).toBeDefined();
    expect(problem).toMatch(/e\.g\.|\blike\b/);
  });

  it("a production instance must be STANDARD_HA", () => {
    const problems = problemsOf(() =>
      parseStackConfig(source("production", { ...INSTANCE_SHAPE, redisTier: "BASIC" }), "production"),
    ).join("\n");
    expect(problems).toMatch(/redisTier must be STANDARD_HA in a production stack/);
    expect(parseStackConfig(source("production", INSTANCE_SHAPE), "production").redisMode).toBe("instance");
  });

  const redisCases: [string, Record<string, string | undefined>, RegExp][] = [
    ["an unknown redisMode", { redisMode: "memcached" }, /redisMode must be one of instance, cluster/],
    ["a Redis older than 7.0 (no sharded pub/sub)", { redisVersion: "REDIS_6_X" }, /redisVersion must be a Memorystore version/],
    ["REDIS_6_2", { redisVersion: "REDIS_6_2" }, /redisVersion must be REDIS_7_0 or later, e.g. REDIS_7_2 \(the gateway uses sharded pub\/sub/],
    ["cluster keys on an instance", { redisShardCount: "3" }, /redisShardCount is a setting of redisMode cluster, but redisMode is instance/],
    ["a password generation on an instance (its AUTH string is Memorystore's)", { redisPasswordGeneration: "2" }, /redisPasswordGeneration is a setting of redisMode cluster/],
  ];
  it.each(redisCases)("staging (instance): %s is refused", (_what, overrides, reason) => {
    expect(problemsOf(() => parseStackConfig(source("staging", overrides), "staging")).join("\n")).toMatch(reason);
  });
  it("staging accepts REDIS_7_0 and later", () => {
    for (const v of ["REDIS_7_0", "REDIS_7_2", "REDIS_8_0"]) expect(parseStackConfig(source("staging", { redisVersion: v }), "staging").redisVersion).toBe(v);
  });

  const clusterCases: [string, Record<string, string | undefined>, RegExp][] = [
    ["both shapes (instance keys on a cluster)", { redisTier: "STANDARD_HA", redisSizeGb: "5" }, /redisTier is a setting of redisMode instance, but redisMode is cluster[\s\S]*redisSizeGb is a setting/],
    ["redisVersion on a cluster", { redisVersion: "REDIS_7_2" }, /redisVersion is a setting of redisMode instance/],
    ["0 shards", { redisShardCount: "0" }, /redisShardCount must be an integer from 1 to 250/],
    ["251 shards", { redisShardCount: "251" }, /redisShardCount must be an integer from 1 to 250/],
    ["3 replicas", { redisReplicaCount: "3" }, /redisReplicaCount must be an integer from 0 to 2/],
    ["an unknown node type", { redisNodeType: "REDIS_HUGE" }, /redisNodeType must be one of REDIS_SHARED_CORE_NANO/],
    ["a PSC subnet that overlaps subnetCidr", { redisPscSubnetCidr: "10.8.0.16/28" }, /redisPscSubnetCidr \(10.8.0.16\/28\) must not overlap subnetCidr/],
    ["a PSC subnet that is no range", { redisPscSubnetCidr: "10.8.1.0" }, /redisPscSubnetCidr must be an IPv4 CIDR range/],
    ["a previous password generation that is not older", { redisPasswordGeneration: "2", redisPreviousPasswordGeneration: "2" }, /redisPreviousPasswordGeneration \(2\) must be lower than redisPasswordGeneration \(2\), e\.g\. 1/],
    ["password generation 0", { redisPasswordGeneration: "0" }, /redisPasswordGeneration must be an integer from 1 to 1000000/],
  ];
  it.each(clusterCases)("production (cluster): %s is refused", (_what, overrides, reason) => {
    expect(problemsOf(() => parseStackConfig(source("production", overrides), "production")).join("\n")).toMatch(reason);
  });

  it("maxInstances beyond the subnet's addresses (two per instance) is refused", () => {
    const problems = problemsOf(() => parseStackConfig(source("staging", { subnetCidr: "10.8.0.0/26", maxInstances: "40" }), "staging"));
    expect(problems.join("\n")).toMatch(/maxInstances \(40\) needs 80 addresses for Direct VPC egress, but subnetCidr \/26 has 60/);
  });

  it("every problem is reported at once", () => {
    const problems = problemsOf(() =>
      parseStackConfig(source("staging", { project: undefined, redisSizeGb: "999", cpu: "3", domain: "x" }), "staging"),
    );
    expect(problems).toHaveLength(4);
    const error = new StackConfigError("staging", problems);
    expect(error.message).toMatch(/Invalid configuration of stack "staging" \(4 problems\)/);
  });

  it("a production stack must be highly available, protected and pinned by digest", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        source("production", {
          redisReplicaCount: "0",
          minInstances: "0",
          deletionProtection: "false",
          image: "europe-west1-docker.pkg.dev/example-chat-prod/chat-gateway/gateway:1.0.0",
          allowedOrigins: '["http://app.example.com"]',
        }),
        "production",
      ),
    ).join("\n");
    expect(problems).toMatch(/redisReplicaCount must be at least 1 in a production stack/);
    expect(problems).toMatch(/minInstances must be at least 1 in a production stack/);
    expect(problems).toMatch(/deletionProtection must be true in a production stack/);
    expect(problems).toMatch(/image must be pinned by digest/);
    expect(problems).toMatch(/must use https in a production stack/);
  });

  it("defaults fill what a stack file leaves out", () => {
    const c = parseStackConfig(source("staging"), "staging");
    expect(c.serviceId).toBe("chat-gateway");
    expect(c.redisVersion).toBe("REDIS_7_2");
    expect(c.cpu).toBe("1");
    expect(c.alerts).toEqual({ authFailureRatio: 0.01, http5xxRatio: 0.02, internalErrorCloses: 20 });
    expect(parseStackConfig(source("staging", { runbookBaseUrl: undefined }), "staging").runbookBaseUrl).toMatch(
      /^https:\/\/github\.com\/[^/]+\/chat-gateway\/blob\/main\/docs\/operations\.md$/,
    );
  });

  it("lists may also be given comma-separated (pulumi config set allowedOrigins 'a,b')", () => {
    const c = parseStackConfig(source("staging", { allowedOrigins: "https://a.example.com, https://b.example.com" }), "staging");
    expect(c.allowedOrigins).toEqual(["https://a.example.com", "https://b.example.com"]);
  });
});

describe("secrets", () => {
  it("jwtSecretKey is required and names the command that sets it", () => {
    const problems = problemsOf(() => parseStackSecrets(() => undefined, "staging"));
    expect(problems.join("\n")).toMatch(/jwtSecretKey is required: pulumi config set --secret jwtSecretKey/);
  });

  it("a JWT key shorter than 32 bytes is refused, as the gateway would", () => {
    const problems = problemsOf(() => parseStackSecrets((k) => (k === "jwtSecretKey" ? "short" : undefined), "staging"));
    expect(problems.join("\n")).toMatch(/jwtSecretKey must be at least 32 bytes/);
  });

  it("the JWT keys leave the config only as Pulumi secrets", async () => {
    const s = parseStackSecrets((k) => (k === "jwtSecretKey" || k === "jwtSecretKeyPrevious" ? TEST_JWT_SECRET : undefined), "staging");
    expect(await pulumi.isSecret(s.jwtSecretKey)).toBe(true);
    expect(await pulumi.isSecret(s.jwtSecretKeyPrevious!)).toBe(true);
    expect(await resolve(s.jwtSecretKey)).toBe(TEST_JWT_SECRET);
  });

  it("jwtSecretKeyPrevious is optional", () => {
    const s = parseStackSecrets((k) => (k === "jwtSecretKey" ? TEST_JWT_SECRET : undefined), "staging");
    expect(s.jwtSecretKeyPrevious).toBeUndefined();
  });
});

describe("the program", () => {
  it("refuses to run with a bad configuration and names every problem, before registering anything", async () => {
    await expect(runProgram("staging", { redisTier: "PREMIUM", jwtSecretKey: undefined })).rejects.toThrow(
      /redisTier must be one of BASIC, STANDARD_HA[\s\S]*jwtSecretKey is required/,
    );
  });
});

describe("Pulumi.yaml", () => {
  const project = readYaml("Pulumi.yaml") as { name: string; main: string; runtime: { name: string; options: Record<string, unknown> } };

  it("names the project chat-gateway and its program infra/index.ts", () => {
    expect(project.name).toBe(PROJECT);
    expect(project.main).toBe("infra/index.ts");
    expect(project.runtime.name).toBe("nodejs");
  });

  it("runs the ESM TypeScript program through tsx, not Pulumi's CommonJS ts-node", () => {
    expect(project.runtime.options.typescript).toBe(false);
    expect(project.runtime.options.nodeargs).toBe("--import tsx");
  });

  it("node --import tsx loads infra/index.ts as an ES module and registers the stack", () => {
    // What the nodejs language host does with these options: node <nodeargs>, then import(main).
    const config = stackConfig("staging");
    const script = `
      import * as pulumi from "@pulumi/pulumi";
      import { pathToFileURL } from "node:url";
      let count = 0;
      await pulumi.runtime.setMocks({
        newResource: (a) => { count++; return { id: a.name + "-id", state: { ...a.inputs, address: "203.0.113.7", host: "10.0.0.3", port: 6378, serverCaCerts: [{ cert: "pem" }], authString: "x" } }; },
        call: (a) => a.inputs,
      }, "chat-gateway", "staging", false);
      const program = await import(pathToFileURL(${JSON.stringify(project.main)}).href);
      await new Promise((r) => setTimeout(r, 500));
      console.log(JSON.stringify({ count, exports: Object.keys(program).sort() }));
    `;
    const result = spawnSync(process.execPath, [...String(project.runtime.options.nodeargs).split(" "), "--input-type=module", "-e", script], {
      cwd: ROOT,
      env: { ...process.env, PULUMI_CONFIG: JSON.stringify(config), PULUMI_CONFIG_SECRET_KEYS: JSON.stringify([`${PROJECT}:jwtSecretKey`]) },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(result.stderr).not.toMatch(/Error/);
    expect(result.status).toBe(0);
    const out = JSON.parse(result.stdout.trim().split("\n").pop() ?? "{}") as { count: number; exports: string[] };
    expect(out.count).toBeGreaterThan(50);
    expect(out.exports).toEqual(expect.arrayContaining(["loadBalancerIp", "redisHost", "secretIds", "serviceName", "url"]));
  });
});
