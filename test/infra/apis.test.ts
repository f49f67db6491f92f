import { describe, expect, it } from "vitest";
import { REDIS_CLUSTER_APIS, REQUIRED_APIS } from "../../infra/apis.js";
import { cachedRuns, STACKS, T } from "./harness.js";

const run = cachedRuns();

describe.each(STACKS)("%s stack: APIs and provider", (stack) => {
  it("enables exactly the APIs the program creates resources through", async () => {
    const r = await run(stack);
    const enabled = r.ofType(T.service).map((s) => s.inputs.service as string);
    // Network Connectivity (the service connection policy) only for the Redis Cluster shape.
    const expected = r.config["chat-gateway:redisMode"] === "cluster" ? [...REQUIRED_APIS, ...REDIS_CLUSTER_APIS] : [...REQUIRED_APIS];
    expect(new Set(enabled)).toEqual(new Set(expected));
    expect(enabled).toHaveLength(expected.length);
    for (const api of ["run", "redis", "secretmanager", "compute", "servicenetworking", "monitoring", "logging"]) {
      expect(enabled).toContain(`${api}.googleapis.com`);
    }
    // Direct VPC egress: no Serverless VPC Access connector, so no vpcaccess API.
    expect(enabled).not.toContain("vpcaccess.googleapis.com");
  });

  it("enables them in the stack's project and leaves them enabled when the stack is destroyed", async () => {
    const r = await run(stack);
    for (const s of r.ofType(T.service)) {
      expect(s.inputs.project).toBe(r.config["chat-gateway:project"]);
      expect(s.inputs.disableOnDestroy).toBe(false);
      expect(s.inputs.disableDependentServices).toBe(false);
    }
  });

  it("no resource is created before every API is enabled", async () => {
    const r = await run(stack);
    const apiUrns = r.ofType(T.service).map((s) => s.urn);
    const resources = r.resources.filter((x) => (x.type.startsWith("gcp:") && x.type !== T.service) || x.type.startsWith("random:"));
    expect(resources.length).toBeGreaterThan(40);
    for (const resource of resources.filter((x) => x.type.startsWith("gcp:"))) {
      const waitsFor = r.dependsOnTransitively(resource);
      for (const api of apiUrns) expect(waitsFor.has(api), `${resource.type} ${resource.name} waits for ${api}`).toBe(true);
    }
  });

  it("every GCP resource goes through one provider set to the stack's project and region", async () => {
    const r = await run(stack);
    const provider = r.one(T.provider);
    expect(provider.inputs.project).toBe(r.config["chat-gateway:project"]);
    expect(provider.inputs.region).toBe(r.config["chat-gateway:region"]);
    expect(JSON.parse(String(provider.inputs.defaultLabels))).toMatchObject({ service: "chat-gateway", stack });
    for (const resource of r.resources.filter((x) => x.type.startsWith("gcp:"))) {
      expect(resource.provider, `${resource.type} ${resource.name}`).toBe(`${provider.urn}::${provider.name}-id`);
    }
  });
});
