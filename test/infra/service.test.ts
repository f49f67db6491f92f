import { describe, expect, it } from "vitest";
import { SECRETS, secretId } from "../../service/src/secretNames.js";
import { cachedRuns, containerEnv, plain, runProgram, STACKS, T, TEST_REDIS_CLUSTER_HOST, TEST_REDIS_HOST, type ProgramRun } from "./harness.js";

const run = cachedRuns();
const template = (r: ProgramRun) => r.one(T.run).inputs.template;
const container = (r: ProgramRun) => template(r).containers[0];

describe.each(STACKS)("%s stack: Cloud Run service", (stack) => {
  it("WebSockets live up to Cloud Run's 3600 s request timeout, and the gateway closes them first", async () => {
    const r = await run(stack);
    expect(template(r).timeout).toBe("3600s");
    const age = Number(containerEnv(r).MAX_CONNECTION_AGE_SECONDS);
    expect(age).toBe(3300);
    expect(age).toBeLessThan(3600);
  });

  it("the gateway drains within Cloud Run's 10 s SIGTERM grace", async () => {
    const grace = Number(containerEnv(await run(stack)).SHUTDOWN_GRACE_MS);
    expect(grace).toBe(8000);
    expect(grace).toBeLessThan(10_000);
  });

  it("CPU stays allocated between requests and is boosted at startup", async () => {
    const resources = container(await run(stack)).resources;
    expect(resources.cpuIdle).toBe(false);
    expect(resources.startupCpuBoost).toBe(true);
  });

  it("session affinity is on (best effort only; Redis is the source of truth)", async () => {
    expect(template(await run(stack)).sessionAffinity).toBe(true);
  });

  it("scaling, concurrency and resources come from the stack config", async () => {
    const r = await run(stack);
    const t = template(r);
    expect(t.scaling).toEqual({
      minInstanceCount: Number(r.config["chat-gateway:minInstances"]),
      maxInstanceCount: Number(r.config["chat-gateway:maxInstances"]),
    });
    expect(t.maxInstanceRequestConcurrency).toBe(Number(r.config["chat-gateway:concurrency"]));
    expect(container(r).resources.limits.cpu).toBe(r.config["chat-gateway:cpu"] ?? "1");
    expect(container(r).image).toBe(r.config["chat-gateway:image"]);
  });

  it("the startup probe waits for /readyz and the liveness probe checks /healthz", async () => {
    const c = container(await run(stack));
    expect(c.startupProbe.httpGet).toEqual({ path: "/readyz", port: 8080 });
    expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: 8080 });
    expect(c.ports).toEqual({ containerPort: 8080, name: "http1" });
  });

  it("reaches Redis through Direct VPC egress, private ranges only", async () => {
    const vpc = template(await run(stack)).vpcAccess;
    expect(vpc.egress).toBe("PRIVATE_RANGES_ONLY");
    expect(vpc.networkInterfaces).toHaveLength(1);
    expect(vpc.connector).toBeUndefined();
  });

  it("only the load balancer (and the VPC) can reach the service", async () => {
    expect((await run(stack)).one(T.run).inputs.ingress).toBe("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER");
  });

  it("runs as its own service account", async () => {
    const r = await run(stack);
    const sa = r.one(T.serviceAccount);
    expect(sa.inputs.accountId).toBe("chat-gateway-run");
    expect(template(r).serviceAccount).toBe(sa.state.email);
  });

  it("the service account can read exactly its secrets", async () => {
    const r = await run(stack);
    const member = `serviceAccount:${r.one(T.serviceAccount).state.email}`;
    const grants = r.ofType(T.secretIam);
    expect(grants.map((g) => g.inputs.secretId).sort()).toEqual(
      SECRETS.map((spec) => `projects/${r.config["chat-gateway:project"]}/secrets/${secretId("chat-gateway", spec)}`).sort(),
    );
    for (const g of grants) expect(g.inputs).toMatchObject({ role: "roles/secretmanager.secretAccessor", member });
    // No project-wide grant of any kind.
    expect(r.resources.filter((x) => /^gcp:(projects|organizations|folder)\/iAM|^gcp:projects\/iam/.test(x.type))).toEqual([]);
  });

  it("nothing grants allUsers or allAuthenticatedUsers anything (the invoker check is disabled instead)", async () => {
    const r = await run(stack);
    const publicGrants = r.resources.filter((x) => /"(allUsers|allAuthenticatedUsers)"/.test(JSON.stringify(x.inputs)));
    expect(publicGrants).toEqual([]);
    expect(r.ofType(T.runIam)).toEqual([]);
  });

  it("the service reaches Redis one way only: REDIS_URL for an instance, REDIS_CLUSTER_NODES for a cluster", async () => {
    const r = await run(stack);
    const env = containerEnv(r);
    const cluster = r.config["chat-gateway:redisMode"] === "cluster";
    expect(Object.keys(env).filter((k) => k === "REDIS_URL" || k === "REDIS_CLUSTER_NODES")).toEqual([cluster ? "REDIS_CLUSTER_NODES" : "REDIS_URL"]);
  });

  it("the service connects to Redis over TLS, with no credentials in the address (rediss:// on 6378, or REDIS_TLS=true for a cluster)", async () => {
    const r = await run(stack);
    const env = containerEnv(r);
    if (r.config["chat-gateway:redisMode"] === "cluster") {
      expect(env.REDIS_TLS).toBe("true");
      expect(String(env.REDIS_CLUSTER_NODES)).toMatch(/^[^@/:]+:\d+$/);
      return;
    }
    const url = new URL(String(env.REDIS_URL));
    expect(url.protocol).toBe("rediss:");
    expect(url.hostname).toBe(TEST_REDIS_HOST);
    expect(url.port).toBe("6378");
    expect(url.username).toBe("");
    expect(url.password).toBe("");
  });

  it("no secret is in the environment: the gateway reads them from Secret Manager itself", async () => {
    const r = await run(stack);
    const envs = container(r).envs as { name: string; value?: string; valueSource?: unknown }[];
    const secretEnvNames = new Set<string>(SECRETS.map((s) => s.env));
    for (const e of envs) {
      expect(secretEnvNames.has(e.name), e.name).toBe(false);
      expect(e.valueSource, e.name).toBeUndefined();
    }
    const secretValues = r.ofType(T.secretVersion).map((v) => plain<string>(v.inputs.secretData));
    const all = JSON.stringify(r.one(T.run).inputs);
    for (const value of secretValues) expect(all.includes(value.trim().slice(0, 40))).toBe(false);
    expect(containerEnv(r)).toMatchObject({ SECRETS_SOURCE: "gcp", NODE_ENV: "production", GCP_PROJECT: r.config["chat-gateway:project"] });
  });

  it("the revision is created after its secret versions and their IAM grants", async () => {
    const r = await run(stack);
    const deps = r.one(T.run).dependencies;
    for (const x of [...r.ofType(T.secretVersion), ...r.ofType(T.secretIam)]) expect(deps, x.name).toContain(x.urn);
  });

  it("is protected from deletion exactly in production", async () => {
    expect((await run(stack)).one(T.run).inputs.deletionProtection).toBe(stack === "production");
  });

  it("the stack exports the Cloud Run service name", async () => {
    const r = await run(stack);
    expect(r.outputs.serviceName).toBe("chat-gateway");
    expect(r.one(T.run).inputs.name).toBe("chat-gateway");
  });
});

describe("production (Redis Cluster)", () => {
  it("the gateway gets the cluster's discovery endpoint and TLS, and no REDIS_URL", async () => {
    const env = containerEnv(await run("production"));
    expect(env.REDIS_CLUSTER_NODES).toBe(`${TEST_REDIS_CLUSTER_HOST}:6379`);
    expect(env.REDIS_TLS).toBe("true");
    expect(env).not.toHaveProperty("REDIS_URL");
  });
});

describe("production", () => {
  it("keeps at least one warm instance", async () => {
    expect(template(await run("production")).scaling.minInstanceCount).toBeGreaterThanOrEqual(1);
  });
});

describe("secret versions and revisions", () => {
  it("a new secret version rolls a new revision (the gateway reads secrets at startup only)", async () => {
    const before = template(await runProgram("staging")).labels["secrets-revision"];
    const during = template(await runProgram("staging", { jwtSecretKeyPrevious: "the-previous-jwt-secret-key-0123456789" })).labels[
      "secrets-revision"
    ];
    expect(before).toMatch(/^[0-9a-f]{16}$/);
    expect(during).toMatch(/^[0-9a-f]{16}$/);
    expect(during).not.toBe(before);
  });
});
