import { describe, expect, it } from "vitest";
import { SECRETS, secretId } from "../../service/src/secretNames.js";
import { cachedRuns, isSecretValue, plain, runProgram, STACKS, T, TEST_JWT_SECRET } from "./harness.js";

const run = cachedRuns();
const SERVICE_ID = "chat-gateway";

describe.each(STACKS)("%s stack: secrets", (stack) => {
  it("every secret the service reads exists, under the id the service computes, and no other", async () => {
    const r = await run(stack);
    const ids = r.ofType(T.secret).map((s) => s.inputs.secretId);
    expect(ids).toEqual(SECRETS.map((spec) => secretId(SERVICE_ID, spec)));
  });

  it("every required secret has a version; the previous JWT key has none outside a rotation", async () => {
    const r = await run(stack);
    const withVersion = new Set(r.ofType(T.secretVersion).map((v) => String(v.inputs.secret).split("/secrets/")[1]));
    for (const spec of SECRETS) {
      expect(withVersion.has(secretId(SERVICE_ID, spec)), spec.id).toBe(spec.required);
    }
  });

  it("secret values reach Secret Manager only as Pulumi secrets", async () => {
    const r = await run(stack);
    const versions = r.ofType(T.secretVersion);
    expect(versions.length).toBeGreaterThanOrEqual(4);
    for (const v of versions) expect(isSecretValue(v.inputs.secretData), v.name).toBe(true);
  });

  it("the JWT key is the one set with pulumi config set --secret (shared with the auth service)", async () => {
    const r = await run(stack);
    const jwt = r.ofType(T.secretVersion).find((v) => String(v.inputs.secret).endsWith("/chat-gateway-jwt-secret-key"));
    expect(plain(jwt?.inputs.secretData)).toBe(TEST_JWT_SECRET);
  });

  it("the service secret is generated: 48 random letters and digits", async () => {
    const r = await run(stack);
    const password = r.ofType(T.password).find((p) => p.name.endsWith("-service-secret-value"))!;
    expect(password.inputs.length).toBe(48);
    expect(password.inputs.special).toBe(false);
    const version = r.ofType(T.secretVersion).find((v) => String(v.inputs.secret).endsWith("/chat-gateway-service-secret"));
    expect(plain(version?.inputs.secretData)).toBe(password.state.result);
  });

  it("a replaced version is disabled, not destroyed, so a bad rotation can be undone", async () => {
    const r = await run(stack);
    for (const v of r.ofType(T.secretVersion)) expect(v.inputs.deletionPolicy).toBe("DISABLE");
  });

  it("secrets replicate automatically and are protected from deletion exactly in production", async () => {
    const r = await run(stack);
    for (const s of r.ofType(T.secret)) {
      expect(s.inputs.replication).toEqual({ auto: {} });
      expect(s.inputs.deletionProtection).toBe(stack === "production");
    }
  });

  it("the stack exports the secret ids", async () => {
    const r = await run(stack);
    expect(r.outputs.secretIds).toEqual(SECRETS.map((spec) => secretId(SERVICE_ID, spec)));
  });
});

describe("during a JWT key rotation", () => {
  it("jwtSecretKeyPrevious becomes a version of the previous-key secret", async () => {
    const previous = "the-previous-jwt-secret-key-0123456789";
    const r = await runProgram("staging", { jwtSecretKeyPrevious: previous });
    const version = r.ofType(T.secretVersion).find((v) => String(v.inputs.secret).endsWith("/chat-gateway-jwt-secret-key-previous"));
    expect(isSecretValue(version?.inputs.secretData)).toBe(true);
    expect(plain(version?.inputs.secretData)).toBe(previous);
  });
});

describe("during a service secret rotation", () => {
  const OLD = "the-old-service-secret-0123456789abcdef";
  const NEW = "the-new-service-secret-0123456789abcdef";

  it("serviceSecret replaces the generated value, and serviceSecretPrevious becomes a version of the previous-secret secret", async () => {
    const r = await runProgram("staging", { serviceSecret: NEW, serviceSecretPrevious: OLD });
    const versionOf = (id: string) => r.ofType(T.secretVersion).find((v) => String(v.inputs.secret).endsWith(`/chat-gateway-${id}`));
    expect(plain(versionOf("service-secret")?.inputs.secretData)).toBe(NEW);
    expect(plain(versionOf("service-secret-previous")?.inputs.secretData)).toBe(OLD);
    expect(isSecretValue(versionOf("service-secret-previous")?.inputs.secretData)).toBe(true);
    expect(r.ofType(T.password).some((p) => p.name.endsWith("-service-secret-value"))).toBe(false);
  });

  it("outside a rotation the previous service secret has no version (the service then accepts only the current one)", async () => {
    const r = await run("staging");
    expect(r.ofType(T.secretVersion).some((v) => String(v.inputs.secret).endsWith("/chat-gateway-service-secret-previous"))).toBe(false);
  });

  it("refuses a short serviceSecretPrevious, as the gateway would at startup", async () => {
    await expect(runProgram("staging", { serviceSecretPrevious: "short" })).rejects.toThrow(/serviceSecretPrevious must be at least 32 bytes/);
  });
});

describe("the Secrets component", () => {
  it("refuses to deploy without a value for a required secret, and names it", async () => {
    await runProgram("staging"); // mocks in place
    const { Secrets } = await import("../../infra/secrets.js");
    expect(() => new Secrets("t", { serviceId: SERVICE_ID, values: {}, generate: ["service-secret"], deletionProtection: false })).toThrow(
      /jwt-secret-key \(JWT_SECRET_KEY\), redis-auth-string \(REDIS_PASSWORD\), redis-tls-ca \(REDIS_TLS_CA\)/,
    );
  });

  it("refuses a value for a secret the service does not read", async () => {
    await runProgram("staging");
    const { Secrets } = await import("../../infra/secrets.js");
    const values = { "jwt-secret-key": "x", "redis-auth-string": "x", "redis-tls-ca": "x", "typo-secret": "x" } as never;
    expect(() => new Secrets("u", { serviceId: SERVICE_ID, values, generate: ["service-secret"], deletionProtection: false })).toThrow(
      /typo-secret is not a secret the service reads/,
    );
  });
});
