import type { FastifyInstance } from "fastify";
import { buildApp } from "./app.js";
import { ConfigError, parseConfig, type Config, type Env } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import { createGcpSecretClient, loadSecrets, type SecretClient } from "./secrets.js";

/**
 * The process around the app (fastify/demo's server.ts split): read the
 * configuration and the secrets, build the app, listen. main.ts adds signals;
 * `npm run dev` calls this with its own environment.
 */
export interface Running {
  readonly app: FastifyInstance;
  readonly config: Config;
  readonly logger: Logger;
  readonly url: string;
}

/** Reads config + secrets; rejects with a ConfigError naming every problem at once. */
export async function loadConfig(env: Env, connectSecrets: () => Promise<SecretClient> = createGcpSecretClient): Promise<Config> {
  const secrets = await loadSecrets(env, connectSecrets);
  const problems = [...secrets.problems];
  try {
    const config = parseConfig({ ...env, ...secrets.values }, { alreadyReported: secrets.reported });
    if (problems.length === 0) return config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems.push(...err.problems);
  }
  throw new ConfigError(problems);
}

export async function startServer(env: Env, options: { logger?: Logger; connectSecrets?: () => Promise<SecretClient> } = {}): Promise<Running> {
  const config = await loadConfig(env, options.connectSecrets);
  const logger = options.logger ?? createLogger({ level: config.logLevel, base: { service: config.serviceId } });
  const app = await buildApp({ config, logger });
  const url = await app.listen({ port: config.port, host: config.host });
  logger.info(
    { event: "listening", url, metrics_port: app.metricsPort(), store: app.store.kind, secrets_source: config.secretsSource },
    "chat gateway listening",
  );
  return { app, config, logger, url };
}
