import { describe, expect, it } from "vitest";
import type { Env } from "../../service/src/config.js";
import { SECRETS, secretVersionName } from "../../service/src/secretNames.js";
import { loadSecrets, secretsPermissionWaitMs, type SecretClient, type WaitClock } from "../../service/src/secrets.js";

/**
 * The first revision of a new stack reads its secrets seconds after its
 * service account was granted access; IAM takes "typically 2 minutes" to
 * propagate (https://cloud.google.com/iam/docs/access-change-propagation).
 * With SECRETS_PERMISSION_WAIT_SECONDS the gateway retries PERMISSION_DENIED
 * for that long; a secret that is really missing still fails at once. Time is
 * a fake clock: `sleep` moves it.
 */
const PROJECT = "p-test";
const GRPC = { NOT_FOUND: 5, PERMISSION_DENIED: 7 };
const VALUE = (env: string) => `value-of-${env}-0123456789abcdef0123456789`;
const name = (env: string) => secretVersionName(PROJECT, "chat-gateway", SECRETS.find((s) => s.env === env)!);

function env(waitSeconds?: number): Env {
  return {
    SECRETS_SOURCE: "gcp",
    GCP_PROJECT: PROJECT,
    ...(waitSeconds === undefined ? {} : { SECRETS_PERMISSION_WAIT_SECONDS: String(waitSeconds) }),
  };
}

/** Answers every secret; `denyFor` maps a secret env name to how many reads are refused first, `missing` are NOT_FOUND. */
function client(options: { denyFor?: Record<string, number>; missing?: string[] } = {}) {
  const reads = new Map<string, number>();
  const fake: SecretClient = {
    async access(versionName) {
      const spec = SECRETS.find((s) => name(s.env) === versionName)!;
      const n = (reads.get(spec.env) ?? 0) + 1;
      reads.set(spec.env, n);
      if (options.missing?.includes(spec.env)) throw Object.assign(new Error("not found"), { code: GRPC.NOT_FOUND });
      if (n <= (options.denyFor?.[spec.env] ?? 0)) throw Object.assign(new Error("denied"), { code: GRPC.PERMISSION_DENIED });
      return VALUE(spec.env);
    },
    async close() {},
  };
  return { connect: async () => fake, reads };
}

function fakeClock() {
  let t = 1_000_000;
  const reports: unknown[] = [];
  const sleeps: number[] = [];
  const clock: WaitClock = {
    now: () => t,
    async sleep(ms) {
      sleeps.push(ms);
      t += ms;
    },
    report: (line) => reports.push(line),
  };
  return { clock, reports, sleeps, elapsed: () => t - 1_000_000 };
}

describe("secret reads while IAM access propagates", () => {
  it("a secret denied while its grant propagates is read once access arrives, within SECRETS_PERMISSION_WAIT_SECONDS", async () => {
    const c = client({ denyFor: { JWT_SECRET_KEY: 4, REDIS_PASSWORD: 2 } });
    const time = fakeClock();
    const result = await loadSecrets(env(180), c.connect, time.clock);
    expect(result.problems).toEqual([]);
    expect(result.values.JWT_SECRET_KEY).toBe(VALUE("JWT_SECRET_KEY"));
    expect(result.values.REDIS_PASSWORD).toBe(VALUE("REDIS_PASSWORD"));
    expect(c.reads.get("JWT_SECRET_KEY")).toBe(5);
    // Only the denied ones are read again.
    expect(c.reads.get("SERVICE_SECRET")).toBe(1);
    expect(time.elapsed()).toBe(4 * 5000);
    expect(time.reports[0]).toEqual({ event: "secret_permission_wait", secrets: ["JWT_SECRET_KEY", "REDIS_PASSWORD"], waited_ms: 0, limit_ms: 180_000 });
  });

  it("a secret that does not exist (NOT_FOUND) fails at once, without waiting", async () => {
    const time = fakeClock();
    const result = await loadSecrets(env(180), client({ missing: ["SERVICE_SECRET"] }).connect, time.clock);
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]).toContain("NOT_FOUND");
    expect(result.problems[0]).toContain(name("SERVICE_SECRET"));
    expect(time.sleeps).toEqual([]);
  });

  it("a missing secret beside a denied one is reported, and the wait ends with the denied one's verdict", async () => {
    const time = fakeClock();
    const result = await loadSecrets(env(30), client({ missing: ["SERVICE_SECRET"], denyFor: { JWT_SECRET_KEY: 1000 } }).connect, time.clock);
    expect(result.problems).toHaveLength(2);
    expect(result.problems.find((p) => p.includes("SERVICE_SECRET"))).toContain("NOT_FOUND");
    expect(result.problems.find((p) => p.includes("JWT_SECRET_KEY"))).toContain("PERMISSION_DENIED");
  });

  it("access still denied when the wait is over fails startup, naming the secret and the time waited", async () => {
    const time = fakeClock();
    const result = await loadSecrets(env(180), client({ denyFor: { REDIS_TLS_CA: 1_000_000 } }).connect, time.clock);
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]).toContain("REDIS_TLS_CA");
    expect(result.problems[0]).toContain("PERMISSION_DENIED");
    expect(result.problems[0]).toContain("after 180 s");
    expect(result.reported.has("REDIS_TLS_CA")).toBe(true);
    expect(time.elapsed()).toBe(180_000);
    expect(time.sleeps.every((ms) => ms <= 5000)).toBe(true);
  });

  it("without SECRETS_PERMISSION_WAIT_SECONDS a denied read fails at once", async () => {
    const time = fakeClock();
    const result = await loadSecrets(env(), client({ denyFor: { JWT_SECRET_KEY: 1 } }).connect, time.clock);
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]).toContain("PERMISSION_DENIED");
    expect(result.problems[0]).not.toContain("retries");
    expect(time.sleeps).toEqual([]);
  });

  it("the wait reports name the secrets, never their values", async () => {
    const time = fakeClock();
    await loadSecrets(env(60), client({ denyFor: { SERVICE_SECRET: 3 } }).connect, time.clock);
    expect(time.reports.length).toBe(3);
    const text = JSON.stringify(time.reports);
    for (const spec of SECRETS) expect(text).not.toContain(VALUE(spec.env));
  });

  it.each([
    ["180", 180_000],
    ["0", 0],
    ["601", 0],
    ["-5", 0],
    ["ten", 0],
  ])("SECRETS_PERMISSION_WAIT_SECONDS=%s waits %i ms (a bad value is parseConfig's to report)", (raw, ms) => {
    expect(secretsPermissionWaitMs({ SECRETS_PERMISSION_WAIT_SECONDS: raw })).toBe(ms);
  });
});
