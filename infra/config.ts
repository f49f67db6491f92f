import * as pulumi from "@pulumi/pulumi";
import { LOG_LEVELS } from "../service/src/settings.js";
import { pscSubnetProblem, readCapacityConfig } from "./configCapacity.js";
import { readDeploymentConfig } from "./configDeployment.js";
import { StackConfigError, stackReaders, type ConfigSource } from "./configReaders.js";
import { readRedisConfig } from "./configRedis.js";
import { parseStackSecrets } from "./configSecrets.js";
import type { StackConfig, StackSecrets } from "./configTypes.js";

/**
 * The stack configuration of the chat gateway, typed and range-checked before
 * a single resource is registered. Like the service's own `parseConfig`, it
 * reads everything, applies the defaults and reports *every* problem at once
 * in a single error that names each key and the reason: a broken
 * `Pulumi.<stack>.yaml` is fixed in one round, not discovered by the GCP API
 * one 400 at a time.
 *
 * The keys are read by area, each in its own module: what is deployed where
 * (./configDeployment.ts), Redis (./configRedis.ts), capacity and subnets
 * (./configCapacity.ts) and secrets (./configSecrets.ts). The shape is in
 * ./configTypes.ts; the readers that collect problems in ./configReaders.ts.
 */

export * from "./configTypes.js";
export { parseStackSecrets, StackConfigError, type ConfigSource };

/**
 * Parses and range-checks the plain (non-secret) settings. Pure, so the checks
 * can be tested without a Pulumi runtime. Throws a StackConfigError naming
 * every problem.
 */
export function parseStackConfig(get: ConfigSource, stack: string): StackConfig {
  const r = stackReaders(get, stack);
  const deployment = readDeploymentConfig(r);
  const redis = readRedisConfig(r);
  const capacity = readCapacityConfig(r);
  if (redis.redisMode === "cluster") {
    const problem = pscSubnetProblem(redis.redisPscSubnetCidr, capacity.subnetCidr);
    if (problem !== undefined) r.problems.push(problem);
  }

  const deletionProtection = r.bool("deletionProtection", true);
  if (r.production && !deletionProtection) r.problems.push("deletionProtection must be true in a production stack");

  const config: StackConfig = {
    stack,
    production: r.production,
    ...deployment,
    ...redis,
    ...capacity,
    deletionProtection,
    // The service's own levels (service/src/settings.ts): a level it refuses never deploys.
    logLevel: r.oneOf("logLevel", LOG_LEVELS, "info"),
    jwtIssuer: r.str("jwtIssuer"),
    jwtAudience: r.str("jwtAudience"),
    ticketEdgeRateLimitPerMinute: r.int("ticketEdgeRateLimitPerMinute", 1200, 10, 100_000, "ticket requests per client IP per minute at Cloud Armor"),
    alerts: {
      authFailureRatio: r.ratio("authFailureRatioAlert", 0.01),
      http5xxRatio: r.ratio("http5xxRatioAlert", 0.02),
      internalErrorCloses: r.int("internalErrorClosesAlert", 20, 1, 100_000, "1011 closes per 5 minutes"),
    },
  };
  if (r.problems.length > 0) throw new StackConfigError(stack, r.problems);
  return config;
}

/** Reads the current stack's configuration from Pulumi (`chat-gateway:<key>`). */
export function loadStackConfig(): { config: StackConfig; secrets: StackSecrets } {
  const cfg = new pulumi.Config("chat-gateway");
  const stack = pulumi.getStack();
  // `cfg.get` on a secret key returns the decrypted text exactly as `getSecret`
  // does before wrapping it; parseStackSecrets wraps it before it goes anywhere.
  const get: ConfigSource = (key) => cfg.get(key);
  let config: StackConfig | undefined;
  const problems: string[] = [];
  try {
    config = parseStackConfig(get, stack);
  } catch (err) {
    if (!(err instanceof StackConfigError)) throw err;
    problems.push(...err.problems);
  }
  let secrets: StackSecrets | undefined;
  try {
    secrets = parseStackSecrets(get, stack);
  } catch (err) {
    if (!(err instanceof StackConfigError)) throw err;
    problems.push(...err.problems);
  }
  if (problems.length > 0 || config === undefined || secrets === undefined) throw new StackConfigError(stack, problems);
  return { config, secrets };
}
