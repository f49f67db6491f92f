/**
 * The contract between the Pulumi program and the service: the secret ids and
 * environment the program gives the Cloud Run service are exactly those the
 * service declares (service/src/secretNames.ts, service/src/settings.ts), each
 * value within its declared range, and the service's own config parser
 * accepts what the program deploys.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../service/src/config.js";
import { SECRETS, secretVersionName } from "../../service/src/secretNames.js";
import { choiceProblem, INTEGER_SETTINGS, integerProblem, SETTINGS } from "../../service/src/settings.js";
import { cachedRuns, containerEnv, plain, ROOT, STACKS, T, type ProgramRun } from "./harness.js";

const run = cachedRuns();

/** Every environment variable service/src/config.ts and its rules read, found in their source. */
function settingsTheServiceReads(): Set<string> {
  const names = new Set<string>();
  for (const file of ["config.ts", "configRules.ts"]) {
    const source = readFileSync(`${ROOT}service/src/${file}`, "utf8");
    for (const m of source.matchAll(/\b(?:str|required|url|secret|int|choice|text)\(\s*"([A-Z][A-Z0-9_]*)"/g)) names.add(m[1]!);
  }
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
  it("the service reads every setting it declares, and declares every setting it reads", () => {
    expect([...settingsTheServiceReads()].sort()).toEqual(Object.keys(SETTINGS).sort());
  });

  it("every secret of secretNames.ts is declared as a secret setting, and no other", () => {
    const secrets = Object.entries(SETTINGS).filter(([, spec]) => spec.kind === "secret").map(([name]) => name);
    expect(secrets.sort()).toEqual(SECRETS.map((s) => s.env).sort());
  });

  describe.each(STACKS)("%s stack", (stack) => {
    it("every environment variable the program sets is a declared plain setting, within its declared range", async () => {
      for (const [name, value] of Object.entries(containerEnv(await run(stack)))) {
        const spec = SETTINGS[name as keyof typeof SETTINGS];
        expect(spec, `${name} is declared in service/src/settings.ts`).toBeDefined();
        // Secrets come from Secret Manager, never the revision's environment.
        expect(spec.kind, name).not.toBe("secret");
        if (spec.kind === "integer") expect(integerProblem(name, value ?? "", spec)).toBeUndefined();
        if (spec.kind === "choice") expect(choiceProblem(name, value ?? "", spec.allowed)).toBeUndefined();
      }
    });

    it("the program sets the environment the service needs in Cloud Run", async () => {
      const r = await run(stack);
      expect(containerEnv(r)).toMatchObject({
        NODE_ENV: "production",
        SECRETS_SOURCE: "gcp",
        GCP_PROJECT: r.config["chat-gateway:project"],
        SERVICE_ID: "chat-gateway",
        ALLOWED_ORIGINS: (JSON.parse(r.config["chat-gateway:allowedOrigins"]!) as string[]).join(","),
        METRICS_PORT: String(INTEGER_SETTINGS.METRICS_PORT.default),
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
