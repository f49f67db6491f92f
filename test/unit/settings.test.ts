import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../service/src/config.js";
import { SECRETS } from "../../service/src/secretNames.js";
import { CHOICE_SETTINGS, choiceProblem, INTEGER_SETTINGS, integerProblem, SETTINGS } from "../../service/src/settings.js";

/** The declaration table both the service and the Pulumi program read (service/src/settings.ts). */

const MINIMAL = { JWT_SECRET_KEY: "settings-test-jwt-key-0123456789abcdef", SERVICE_SECRET: "settings-test-service-secret-0123456789" };

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    parseConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("parseConfig accepted the environment");
}

describe("the settings declaration", () => {
  it("every integer default lies within its own range", () => {
    for (const [name, spec] of Object.entries(INTEGER_SETTINGS)) {
      expect(integerProblem(name, String(spec.default), spec), name).toBeUndefined();
    }
  });

  it("every choice default is one of its allowed values", () => {
    for (const [name, spec] of Object.entries(CHOICE_SETTINGS)) {
      if ("default" in spec) expect(spec.allowed as readonly string[], name).toContain(spec.default);
    }
  });

  it("the secrets are those of secretNames.ts, with their descriptions, not copies", () => {
    for (const spec of SECRETS) expect(SETTINGS[spec.env]).toEqual({ kind: "secret", description: spec.description });
  });

  it("every setting says what it is for", () => {
    for (const [name, spec] of Object.entries(SETTINGS)) expect(spec.description.length, name).toBeGreaterThan(10);
  });
});

describe("problems name the setting, the allowed values and what was given", () => {
  it("two allowed values are spelled out as a pair", () => {
    expect(choiceProblem("REDIS_TLS", "yes", ["true", "false"])).toBe('REDIS_TLS must be "true" or "false"; got "yes"');
  });

  it("a bad LOG_LEVEL lists every level", () => {
    const problems = problemsOf({ ...MINIMAL, LOG_LEVEL: "verbose" });
    expect(problems).toEqual(['LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent; got "verbose"']);
  });

  it("a bad SECRETS_SOURCE and a bad integer are both reported, not only the first", () => {
    const problems = problemsOf({ ...MINIMAL, SECRETS_SOURCE: "vault", PORT: "http" });
    expect(problems).toEqual([
      'SECRETS_SOURCE must be "env" or "gcp"; got "vault"',
      'PORT must be an integer from 0 to 65535 (port); got "http"',
    ]);
  });
});
