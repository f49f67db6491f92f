import { describe, expect, it } from "vitest";
import { gatewayAclRule } from "../../service/src/plugins/store/acl.js";
import {
  cachedRuns,
  containerEnv,
  INSTANCE_SHAPE,
  isSecretValue,
  plain,
  runProgram,
  T,
  TEST_CA,
  TEST_CLUSTER_CA,
  TEST_REDIS_CLUSTER_HOST,
  TEST_REDIS_HOST,
  type ProgramRun,
} from "./harness.js";

const run = cachedRuns();

/** The instance shape: staging as written, and production switched back to one STANDARD_HA instance. */
let productionInstance: Promise<ProgramRun> | undefined;
const instanceRuns = {
  staging: () => run("staging"),
  "production (redisMode instance)": () => {
    // After the cached runs: mocks and config are process-global.
    productionInstance ??= run("staging").then(() => run("production")).then(() => runProgram("production", INSTANCE_SHAPE));
    return productionInstance;
  },
} as const;

const versionOf = (r: ProgramRun, secretId: string) => r.ofType(T.secretVersion).find((v) => String(v.inputs.secret).endsWith(`/secrets/${secretId}`));

describe("Redis shape", () => {
  it("staging uses a BASIC instance; production's example stack a Redis Cluster", async () => {
    const staging = await run("staging");
    expect(staging.one(T.redis).inputs.tier).toBe("BASIC");
    expect(staging.ofType(T.redisCluster)).toHaveLength(0);
    expect(staging.ofType(T.serviceConnectionPolicy)).toHaveLength(0);
    const production = await run("production");
    expect(production.one(T.redisCluster).inputs).toMatchObject({ shardCount: 3, replicaCount: 1 });
    expect(production.ofType(T.redis)).toHaveLength(0);
  });

  it("production switched to redisMode instance gets a STANDARD_HA instance and no cluster", async () => {
    const r = await instanceRuns["production (redisMode instance)"]();
    expect(r.one(T.redis).inputs.tier).toBe("STANDARD_HA");
    expect(r.ofType(T.redisCluster)).toHaveLength(0);
    expect(r.ofType(T.serviceConnectionPolicy)).toHaveLength(0);
  });

  it("the program refuses both shapes at once, and a Redis without sharded pub/sub, naming the reason", async () => {
    await expect(runProgram("production", { redisTier: "STANDARD_HA" })).rejects.toThrow(
      /redisTier is a setting of redisMode instance, but redisMode is cluster/,
    );
    await expect(runProgram("staging", { redisVersion: "REDIS_6_2" })).rejects.toThrow(/redisVersion must be REDIS_7_0 or later/);
  });
});

describe.each(Object.keys(instanceRuns) as (keyof typeof instanceRuns)[])("%s: Redis instance", (shape) => {
  const get = instanceRuns[shape];
  const production = shape !== "staging";

  it("requires the AUTH string and speaks TLS only (SERVER_AUTHENTICATION, set at creation)", async () => {
    const redis = (await get()).one(T.redis);
    expect(redis.inputs.authEnabled).toBe(true);
    expect(redis.inputs.transitEncryptionMode).toBe("SERVER_AUTHENTICATION");
  });

  it("is reachable only from the gateway's VPC, through private services access", async () => {
    const r = await get();
    const redis = r.one(T.redis);
    const vpc = r.one(T.network);
    const range = r.ofType(T.globalAddress).find((a) => a.inputs.purpose === "VPC_PEERING");
    expect(redis.inputs.connectMode).toBe("PRIVATE_SERVICE_ACCESS");
    expect(redis.inputs.authorizedNetwork).toContain(vpc.name);
    expect(redis.inputs.reservedIpRange).toBe(range?.state.name);
  });

  it("is created after the servicenetworking peering", async () => {
    const r = await get();
    expect(r.one(T.redis).dependencies).toContain(r.one(T.psa).urn);
  });

  it("takes its size, version (7.0 or later) and region from the stack config", async () => {
    const r = await get();
    const redis = r.one(T.redis);
    expect(redis.inputs.memorySizeGb).toBe(Number(r.config["chat-gateway:redisSizeGb"]));
    expect(redis.inputs.redisVersion).toMatch(/^REDIS_([7-9]|\d{2,})_\d+$/);
    expect(redis.inputs.region).toBe(r.config["chat-gateway:region"]);
  });

  it("is protected from deletion exactly when the stack says so", async () => {
    expect((await get()).one(T.redis).inputs.deletionProtection).toBe(production);
  });

  it("its AUTH string and server CA go into Secret Manager as versions of redis-auth-string and redis-tls-ca", async () => {
    const r = await get();
    const redis = r.one(T.redis);
    const auth = versionOf(r, "chat-gateway-redis-auth-string");
    const ca = versionOf(r, "chat-gateway-redis-tls-ca");
    expect(isSecretValue(auth?.inputs.secretData)).toBe(true);
    expect(plain(auth?.inputs.secretData)).toBe(redis.state.authString);
    expect(isSecretValue(ca?.inputs.secretData)).toBe(true);
    // serverCaCerts[0].cert, and any further CA Memorystore lists during a CA rotation.
    expect(plain<string>(ca?.inputs.secretData)).toContain(redis.state.serverCaCerts[0].cert);
    expect(plain<string>(ca?.inputs.secretData)).toContain(TEST_CA);
  });

  it("the gateway gets REDIS_URL and neither REDIS_CLUSTER_NODES nor REDIS_TLS", async () => {
    const env = containerEnv(await get());
    expect(env.REDIS_URL).toBe(`rediss://${TEST_REDIS_HOST}:6378`);
    expect(env).not.toHaveProperty("REDIS_CLUSTER_NODES");
    expect(env).not.toHaveProperty("REDIS_TLS");
  });

  it("the stack exports the Redis host", async () => {
    expect((await get()).outputs.redisHost).toBe(TEST_REDIS_HOST);
  });
});

describe("production: Redis Cluster", () => {
  it("encrypts in transit (server authentication) and is spread over zones", async () => {
    const c = (await run("production")).one(T.redisCluster);
    expect(c.inputs.transitEncryptionMode).toBe("TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION");
    expect(c.inputs.zoneDistributionConfig).toEqual({ mode: "MULTI_ZONE" });
  });

  it("requires the gateway's ACL user: an ACL policy with its user, rule and password is attached (no IAM auth)", async () => {
    const r = await run("production");
    const cluster = r.one(T.redisCluster);
    const policy = r.one(T.redisAclPolicy);
    expect(cluster.inputs.authorizationMode).toBe("AUTH_MODE_DISABLED");
    expect(cluster.inputs.aclPolicy).toBe(policy.state.name);
    expect(cluster.dependencies).toContain(policy.urn);
    expect(policy.inputs).toMatchObject({ aclPolicyId: "chat-gateway-acl", location: r.config["chat-gateway:region"] });
    const password = plain<string>(versionOf(r, "chat-gateway-redis-auth-string")?.inputs.secretData);
    // The rule holds the password: the whole list is a secret in the state.
    expect(isSecretValue(policy.inputs.rules)).toBe(true);
    const rules = plain<{ username: string; rule: string }[]>(policy.inputs.rules);
    expect(rules).toHaveLength(1);
    expect(rules[0]!.username).toBe("chat-gateway");
    expect(rules[0]!.rule).toBe(gatewayAclRule([password]));
    expect(containerEnv(r).REDIS_USERNAME).toBe("chat-gateway");
  });

  it("a password rotation accepts the previous generation's password too, until previousPasswordGeneration is removed", async () => {
    const rotating = await runProgram("production", { redisPasswordGeneration: "2", redisPreviousPasswordGeneration: "1" });
    const byName = (r: ProgramRun, suffix: string) => r.ofType(T.password).find((p) => p.name.endsWith(suffix))!;
    const current = byName(rotating, "-redis-password-g2").state.result as string;
    const previous = byName(rotating, "-redis-password-g1");
    expect(previous).toBeDefined();
    expect(plain<{ rule: string }[]>(rotating.one(T.redisAclPolicy).inputs.rules)[0]!.rule).toBe(gatewayAclRule([current, previous.state.result]));
    expect(current).not.toBe(previous.state.result);
    // The new revision reads the new password, and starts only after the cluster accepts it.
    expect(plain(versionOf(rotating, "chat-gateway-redis-auth-string")?.inputs.secretData)).toBe(current);
    expect(rotating.dependsOnTransitively(rotating.one(T.run))).toContain(rotating.one(T.redisAclPolicy).urn);
    // …and the new password becomes the secret's latest version only after the policy accepts it.
    expect(rotating.dependsOnTransitively(versionOf(rotating, "chat-gateway-redis-auth-string")!)).toContain(rotating.one(T.redisAclPolicy).urn);
    const done = await runProgram("production", { redisPasswordGeneration: "2" });
    expect(done.ofType(T.password).filter((p) => /-redis-password-g\d+$/.test(p.name)).map((p) => p.name)).toEqual([
      expect.stringMatching(/-redis-password-g2$/),
    ]);
  });

  it("takes shards, replicas, node type and region from the stack config, and is protected from deletion", async () => {
    const r = await run("production");
    expect(r.one(T.redisCluster).inputs).toMatchObject({
      shardCount: Number(r.config["chat-gateway:redisShardCount"]),
      replicaCount: Number(r.config["chat-gateway:redisReplicaCount"]),
      nodeType: r.config["chat-gateway:redisNodeType"],
      region: r.config["chat-gateway:region"],
      deletionProtectionEnabled: true,
    });
  });

  it("is reachable only through Private Service Connect endpoints in the gateway's VPC", async () => {
    const r = await run("production");
    const vpc = r.one(T.network);
    const c = r.one(T.redisCluster);
    expect(c.inputs.pscConfigs).toHaveLength(1);
    expect(c.inputs.pscConfigs[0].network).toContain(vpc.name);
  });

  it("a service connection policy for gcp-memorystore-redis places the endpoints in a subnet of their own, before the cluster", async () => {
    const r = await run("production");
    const policy = r.one(T.serviceConnectionPolicy);
    const pscSubnet = r.ofType(T.subnetwork).find((s) => s.name.endsWith("-redis-psc"));
    const runSubnet = r.ofType(T.subnetwork).find((s) => s.name.endsWith("-run-egress"));
    expect(policy.inputs.serviceClass).toBe("gcp-memorystore-redis");
    expect(policy.inputs.location).toBe(r.config["chat-gateway:region"]);
    expect(policy.inputs.network).toContain(r.one(T.network).name);
    expect(policy.inputs.pscConfig.subnetworks).toEqual([expect.stringContaining(pscSubnet!.name)]);
    expect(pscSubnet?.inputs.ipCidrRange).toBe(r.config["chat-gateway:redisPscSubnetCidr"]);
    expect(pscSubnet?.inputs.region).toBe(r.config["chat-gateway:region"]);
    expect(runSubnet?.inputs.ipCidrRange).not.toBe(pscSubnet?.inputs.ipCidrRange);
    expect(r.one(T.redisCluster).dependencies).toContain(policy.urn);
  });

  it("the gateway gets the discovery endpoint as REDIS_CLUSTER_NODES, REDIS_TLS=true, and no REDIS_URL", async () => {
    const env = containerEnv(await run("production"));
    expect(env.REDIS_CLUSTER_NODES).toBe(`${TEST_REDIS_CLUSTER_HOST}:6379`);
    expect(env.REDIS_TLS).toBe("true");
    expect(env).not.toHaveProperty("REDIS_URL");
  });

  it("the cluster's managed server CA goes into redis-tls-ca", async () => {
    const r = await run("production");
    const c = r.one(T.redisCluster);
    const ca = versionOf(r, "chat-gateway-redis-tls-ca");
    expect(isSecretValue(ca?.inputs.secretData)).toBe(true);
    expect(plain<string>(ca?.inputs.secretData)).toContain(c.state.managedServerCas[0].caCerts[0].certificates[0]);
    expect(plain<string>(ca?.inputs.secretData)).toContain(TEST_CLUSTER_CA);
    expect(plain<string>(ca?.inputs.secretData)).not.toContain(TEST_CA);
  });

  it("redis-auth-string holds the password of the cluster's ACL user, generated by the program", async () => {
    const r = await run("production");
    const password = r.ofType(T.password).find((p) => p.name.endsWith("-redis-password-g1"));
    expect(password?.inputs).toMatchObject({ length: 48, special: false });
    expect(plain(versionOf(r, "chat-gateway-redis-auth-string")?.inputs.secretData)).toBe(password?.state.result);
    expect(isSecretValue(versionOf(r, "chat-gateway-redis-auth-string")?.inputs.secretData)).toBe(true);
  });

  it("the stack exports the discovery endpoint's address as the Redis host", async () => {
    expect((await run("production")).outputs.redisHost).toBe(TEST_REDIS_CLUSTER_HOST);
  });
});
