/**
 * The rules the Google APIs enforce at apply time, which Pulumi's mocks
 * accept silently. Each test is one rule, named as the rule, with its source;
 * each runs on both stack files. (The 1011 alert's match on the ws_close log
 * line is held by the monitoring tests.)
 */
import { describe, expect, it } from "vitest";
import { REDIS_CLUSTER_APIS } from "../../infra/apis.js";
import { CLOUD_RUN_MAX_CONCURRENCY, socketsPerInstance } from "../../infra/capacity.js";
import { PUBLIC_PATHS } from "../../infra/loadBalancer.js";
import { cachedRuns, containerEnv, runProgram, STACKS, T, INSTANCE_SHAPE, type ProgramRun } from "./harness.js";

const run = cachedRuns();
const seconds = (duration: string) => Number(/^(\d+)s$/.exec(duration)?.[1] ?? NaN);
const conditions = (r: ProgramRun) =>
  r.ofType(T.alert).flatMap((p) => (p.inputs.conditions as { displayName: string; conditionThreshold?: Record<string, any> }[]).map((c) => ({ policy: p, ...c })));

describe.each(STACKS)("%s stack: rules the Google APIs enforce at apply time", (stack) => {
  // GoogleCloudPlatform/monitoring-dashboard-samples#280, chainguard-dev/terraform-infra-common#401:
  // 400 "Conditions setting evaluation_missing_data must have a non-zero duration".
  it("no alert condition sets evaluationMissingData with a zero duration", async () => {
    const all = conditions(await run(stack));
    expect(all.length).toBe(5);
    for (const c of all) {
      const t = c.conditionThreshold!;
      if (t.evaluationMissingData !== undefined) expect(seconds(t.duration), c.displayName).toBeGreaterThan(0);
    }
  });

  // hashicorp/terraform-provider-google#11102, GoogleCloudPlatform/cloud-foundation-fabric#3739: a policy on
  // a log-based metric created in the same apply gets 404 "Cannot find metric(s)" for up to 10 minutes.
  it("every alert policy on a log-based metric is created only after Monitoring shows that metric", async () => {
    const r = await run(stack);
    const waits = r.ofType(T.metricVisible);
    let onLogMetrics = 0;
    for (const c of conditions(r)) {
      const types = [...String(c.conditionThreshold!.filter).matchAll(/metric\.type="(logging\.googleapis\.com\/user\/[^"]+)"/g)].map((m) => m[1]);
      if (types.length === 0) continue;
      onLogMetrics++;
      const before = r.dependsOnTransitively(c.policy);
      for (const type of types) {
        const wait = waits.find((w) => w.inputs.metricType === type);
        expect(wait, `a MetricVisible for ${type}`).toBeDefined();
        expect(wait!.inputs.project).toBe(r.config["chat-gateway:project"]);
        expect(before.has(wait!.urn), `${c.displayName} waits for ${type}`).toBe(true);
        // …and the wait itself starts after the metric exists.
        const metric = r.ofType(T.logMetric).find((m) => type === `logging.googleapis.com/user/${m.inputs.name}`)!;
        expect(r.dependsOnTransitively(wait!).has(metric.urn)).toBe(true);
      }
    }
    expect(onLogMetrics).toBe(3);
  });

  // https://cloud.google.com/run/docs/known-issues, "Reserved URL paths": "avoid all paths that end in z";
  // /healthz gets Google's 404 from Cloud Run's front end.
  it("no public check or load balancer route uses a path ending in z; liveness and readiness are /health and /ready", async () => {
    const r = await run(stack);
    const uptimePath = r.one(T.uptime).inputs.httpCheck.path as string;
    const routed = r.ofType(T.urlMap).find((m) => m.inputs.pathMatchers)!.inputs.pathMatchers.flatMap((m: any) => m.pathRules.flatMap((p: any) => p.paths)) as string[];
    for (const path of [uptimePath, ...routed]) expect(path, path).not.toMatch(/z$/);
    expect(uptimePath).toBe("/health");
    expect(routed).toEqual(expect.arrayContaining(["/health", "/ready"]));
    expect([...PUBLIC_PATHS]).toEqual(routed);
  });

  // https://cloud.google.com/memorystore/docs/cluster/instance-provisioning-vpc: the PSC automation of
  // Memorystore for Redis Cluster needs networkconnectivity and serviceconsumermanagement (besides compute, redis).
  it("a Redis Cluster stack enables serviceconsumermanagement, networkconnectivity, compute and redis", async () => {
    const r = await run(stack);
    const enabled = r.ofType(T.service).map((s) => s.inputs.service as string);
    const cluster = r.config["chat-gateway:redisMode"] === "cluster";
    for (const api of REDIS_CLUSTER_APIS) expect(enabled.includes(api), api).toBe(cluster);
    if (cluster) {
      expect(enabled).toEqual(expect.arrayContaining(["serviceconsumermanagement.googleapis.com", "networkconnectivity.googleapis.com", "compute.googleapis.com", "redis.googleapis.com"]));
      expect(r.dependsOnTransitively(r.one(T.redisCluster))).toContain(r.ofType(T.service).find((s) => s.inputs.service === "serviceconsumermanagement.googleapis.com")!.urn);
    }
  });

  // https://cloud.google.com/run/docs/authenticating/public#invoker_check: disabling the invoker check is the
  // recommended way to a public service, and the one that works under domain-restricted sharing (allUsers is refused).
  it("the service is public through invokerIamDisabled, never an allUsers grant", async () => {
    const r = await run(stack);
    expect(r.one(T.run).inputs.invokerIamDisabled).toBe(true);
    expect(r.resources.filter((x) => /"(allUsers|allAuthenticatedUsers)"/.test(JSON.stringify(x.inputs)))).toEqual([]);
  });

  // https://cloud.google.com/iam/docs/access-change-propagation: "typically 2 minutes", "7 minutes or longer".
  it("the first revision outlasts IAM propagation: secret reads denied at first are retried inside the startup probe's window", async () => {
    const r = await run(stack);
    const svc = r.one(T.run);
    const wait = Number(containerEnv(r).SECRETS_PERMISSION_WAIT_SECONDS);
    const probe = svc.inputs.template.containers[0].startupProbe;
    expect(wait).toBeGreaterThanOrEqual(120);
    // Room after the wait for the store connection (Direct VPC egress can take a minute to connect).
    expect(wait + 30).toBeLessThanOrEqual(probe.failureThreshold * probe.periodSeconds + (probe.initialDelaySeconds ?? 0));
    // The grants exist before the revision is created, so the wait only covers their propagation.
    const before = r.dependsOnTransitively(svc);
    for (const grant of r.ofType(T.secretIam)) expect(before.has(grant.urn)).toBe(true);
  });

  // https://cloud.google.com/run/docs/configuring/vpc-direct-vpc (limitations): "connection establishment delays of
  // a minute or more on instance startup"; Cloud Run caps failureThreshold × periodSeconds of a startup probe at 240 s.
  it("the startup probe allows at least 240 s, within Cloud Run's limits", async () => {
    const probe = (await run(stack)).one(T.run).inputs.template.containers[0].startupProbe;
    const window = probe.failureThreshold * probe.periodSeconds + (probe.initialDelaySeconds ?? 0);
    expect(window).toBeGreaterThanOrEqual(240);
    expect(probe.failureThreshold * probe.periodSeconds).toBeLessThanOrEqual(240);
    expect(probe.periodSeconds).toBeGreaterThanOrEqual(probe.timeoutSeconds);
  });

  // Memorystore for Redis Cluster: ACL policies (https://cloud.google.com/memorystore/docs/cluster/use-acl-policies);
  // an instance: AUTH (https://cloud.google.com/memorystore/docs/redis/about-redis-auth).
  it("Redis requires client authentication, in either shape", async () => {
    const r = await run(stack);
    if (r.config["chat-gateway:redisMode"] === "cluster") {
      expect(r.one(T.redisCluster).inputs.aclPolicy).toBe(r.one(T.redisAclPolicy).state.name);
      expect(containerEnv(r).REDIS_USERNAME).toBe("chat-gateway");
    } else {
      expect(r.one(T.redis).inputs.authEnabled).toBe(true);
      expect(containerEnv(r)).not.toHaveProperty("REDIS_USERNAME");
    }
  });

  // https://cloud.google.com/run/docs/about-concurrency: every open WebSocket is a concurrent request, 1000 at most
  // per instance; docs/benchmarks.md bench 4 measured ~7.9 KiB per socket (docs/operations.md#capacity).
  it("concurrency is the measured sockets per instance: Cloud Run's 1000, which the memory limit holds", async () => {
    const r = await run(stack);
    const concurrency = r.one(T.run).inputs.template.maxInstanceRequestConcurrency as number;
    const memory = r.one(T.run).inputs.template.containers[0].resources.limits.memory as string;
    expect(concurrency).toBe(CLOUD_RUN_MAX_CONCURRENCY);
    expect(concurrency).toBeLessThanOrEqual(socketsPerInstance(memory));
  });
});

describe("production switched to one Redis instance", () => {
  it("still requires client authentication (AUTH), and needs no cluster APIs", async () => {
    const r = await runProgram("production", INSTANCE_SHAPE);
    expect(r.one(T.redis).inputs.authEnabled).toBe(true);
    expect(r.ofType(T.service).map((s) => s.inputs.service)).not.toContain("serviceconsumermanagement.googleapis.com");
  });
});
