/**
 * The contract between the Pulumi program and the service: the secret ids and
 * environment the program gives the Cloud Run service are exactly those the
 * service reads (service/src/secretNames.ts, service/src/config.ts), and the
 * service's own config parser accepts what the program deploys.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { INTEGER_SETTINGS, parseConfig } from "../../service/src/config.js";
import { SECRETS, secretVersionName } from "../../service/src/secretNames.js";
import { cachedRuns, containerEnv, plain, ROOT, STACKS, T, type ProgramRun } from "./harness.js";

const run = cachedRuns();

/** Every environment variable service/src/config.ts reads, found in its source. */
function settingsTheServiceReads(): Set<string> {
  const source = readFileSync(`${ROOT}service/src/config.ts`, "utf8");
  const names = new Set<string>(Object.keys(INTEGER_SETTINGS));
  for (const m of source.matchAll(/\b(?:str|required|url|secret|int)\(\s*"([A-Z][A-Z0-9_]*)"/g)) names.add(m[1]!);
  for (const spec of SECRETS) names.add(spec.env);
  return names;
}

/** What the service would read from Secret Manager: each deployed version's value, under its env name. */
function secretEnv(r: ProgramRun): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of r.ofType(T.secretVersion)) {
    const id = String(v.inputs.secret).split("/secrets/")[1];
    const spec = SECRETS.find((s) => id === `${containerEnv(r).SERVICE_ID}-${s.id}`);
    if (!spec) throw new Error(`a version of ${id}, a secret the service does not read`);
    env[spec.env] = plain<string>(v.inputs.secretData);
  }
  return env;
}

describe("the service reads what the program deploys", () => {
  it("the source scan finds the settings it should (guards the scan itself)", () => {
    const known = settingsTheServiceReads();
    for (const name of ["NODE_ENV", "SECRETS_SOURCE", "GCP_PROJECT", "SERVICE_ID", "REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_TLS", "ALLOWED_ORIGINS", "METRICS_PORT", "LOG_LEVEL"]) {
      expect(known.has(name), name).toBe(true);
    }
  });

  describe.each(STACKS)("%s stack", (stack) => {
    it("every environment variable the program sets is a setting the service knows", async () => {
      const known = settingsTheServiceReads();
      for (const name of Object.keys(containerEnv(await run(stack)))) expect(known.has(name), `${name} is read by service/src/config.ts`).toBe(true);
    });

    it("the program sets the environment the service needs in Cloud Run", async () => {
      const r = await run(stack);
      expect(containerEnv(r)).toMatchObject({
        NODE_ENV: "production",
        SECRETS_SOURCE: "gcp",
        GCP_PROJECT: r.config["chat-gateway:project"],
        SERVICE_ID: "chat-gateway",
        ALLOWED_ORIGINS: (JSON.parse(r.config["chat-gateway:allowedOrigins"]!) as string[]).join(","),
        METRICS_PORT: "9464",
      });
      // Cloud Run sets PORT itself and refuses it in the template.
      expect(containerEnv(r)).not.toHaveProperty("PORT");
    });

    it("the secrets deployed are exactly those the service reads, at the names it reads them from", async () => {
      const r = await run(stack);
      const env = containerEnv(r);
      const deployed = r.ofType(T.secret).map((s) => `${s.state.name}/versions/latest`);
      expect(deployed).toEqual(SECRETS.map((spec) => secretVersionName(env.GCP_PROJECT!, env.SERVICE_ID!, spec)));
    });

    it("every secret the service requires has a version it can read", async () => {
      const env = secretEnv(await run(stack));
      for (const spec of SECRETS.filter((s) => s.required)) expect(env[spec.env], spec.env).toBeTruthy();
    });

    it("parseConfig accepts the plain environment plus the secrets the service would read", async () => {
      const r = await run(stack);
      const config = parseConfig({ ...containerEnv(r), ...secretEnv(r) });
      expect(config.production).toBe(true);
      expect(config.secretsSource).toBe("gcp");
      expect(config.gcpProject).toBe(r.config["chat-gateway:project"]);
      expect(config.serviceId).toBe("chat-gateway");
      if (r.config["chat-gateway:redisMode"] === "cluster") {
        expect(config.redis.url).toBeUndefined();
        expect(config.redis.cluster?.tls).toBe(true);
        expect(config.redis.cluster?.nodes.length).toBe(1);
      } else {
        expect(config.redis.url).toMatch(/^rediss:\/\//);
        expect(config.redis.cluster).toBeUndefined();
      }
      expect(config.redis.password).toBeTruthy();
      expect(config.redis.tlsCa).toContain("-----BEGIN CERTIFICATE-----");
      expect(config.allowedOrigins.length).toBeGreaterThan(0);
    });

    it("the service's timing fits the platform's: connections end before Cloud Run's timeout, draining before SIGKILL", async () => {
      const r = await run(stack);
      const config = parseConfig({ ...containerEnv(r), ...secretEnv(r) });
      const timeoutSeconds = Number(String(r.one(T.run).inputs.template.timeout).replace(/s$/, ""));
      expect(config.maxConnectionAgeSeconds).toBeLessThan(timeoutSeconds);
      expect(config.shutdownGraceMs).toBeLessThan(10_000);
      expect(config.port).toBe(r.one(T.run).inputs.template.containers[0].ports.containerPort);
    });
  });
});
