import { describe, expect, it } from "vitest";
import { cachedRuns, isSecretValue, plain, STACKS, T, TEST_CA, TEST_REDIS_HOST } from "./harness.js";

const run = cachedRuns();

describe("Redis tier", () => {
  it("staging uses BASIC Redis and production STANDARD_HA", async () => {
    expect((await run("staging")).one(T.redis).inputs.tier).toBe("BASIC");
    expect((await run("production")).one(T.redis).inputs.tier).toBe("STANDARD_HA");
  });
});

describe.each(STACKS)("%s stack: Redis", (stack) => {
  it("requires the AUTH string and speaks TLS only (SERVER_AUTHENTICATION, set at creation)", async () => {
    const redis = (await run(stack)).one(T.redis);
    expect(redis.inputs.authEnabled).toBe(true);
    expect(redis.inputs.transitEncryptionMode).toBe("SERVER_AUTHENTICATION");
  });

  it("is reachable only from the gateway's VPC, through private services access", async () => {
    const r = await run(stack);
    const redis = r.one(T.redis);
    const vpc = r.one(T.network);
    const range = r.ofType(T.globalAddress).find((a) => a.inputs.purpose === "VPC_PEERING");
    expect(redis.inputs.connectMode).toBe("PRIVATE_SERVICE_ACCESS");
    expect(redis.inputs.authorizedNetwork).toContain(vpc.name);
    expect(redis.inputs.reservedIpRange).toBe(range?.state.name);
  });

  it("is created after the servicenetworking peering", async () => {
    const r = await run(stack);
    expect(r.one(T.redis).dependencies).toContain(r.one(T.psa).urn);
  });

  it("takes its size, version and region from the stack config", async () => {
    const r = await run(stack);
    const redis = r.one(T.redis);
    expect(redis.inputs.memorySizeGb).toBe(Number(r.config["chat-gateway:redisSizeGb"]));
    expect(redis.inputs.redisVersion).toMatch(/^REDIS_\d+_\d+$/);
    expect(redis.inputs.region).toBe(r.config["chat-gateway:region"]);
  });

  it("is protected from deletion exactly when the stack says so", async () => {
    const r = await run(stack);
    expect(r.one(T.redis).inputs.deletionProtection).toBe(stack === "production");
  });

  it("its AUTH string and server CA go into Secret Manager as versions of redis-auth-string and redis-tls-ca", async () => {
    const r = await run(stack);
    const redis = r.one(T.redis);
    const versionOf = (secretId: string) =>
      r.ofType(T.secretVersion).find((v) => String(v.inputs.secret).endsWith(`/secrets/${secretId}`));
    const auth = versionOf("chat-gateway-redis-auth-string");
    const ca = versionOf("chat-gateway-redis-tls-ca");
    expect(isSecretValue(auth?.inputs.secretData)).toBe(true);
    expect(plain(auth?.inputs.secretData)).toBe(redis.state.authString);
    expect(isSecretValue(ca?.inputs.secretData)).toBe(true);
    // serverCaCerts[0].cert, and any further CA Memorystore lists during a CA rotation.
    expect(plain<string>(ca?.inputs.secretData)).toContain(redis.state.serverCaCerts[0].cert);
    expect(plain<string>(ca?.inputs.secretData)).toContain(TEST_CA);
  });

  it("the stack exports the Redis host", async () => {
    expect((await run(stack)).outputs.redisHost).toBe(TEST_REDIS_HOST);
  });
});
