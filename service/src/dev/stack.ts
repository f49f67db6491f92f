/**
 * `npm run dev` as a function: the gateway (the real app, from
 * service/src/server.ts, with the embedded store), the sign-in stand-in,
 * sharing a freshly generated key, and the example agent backend
 * (service/examples/agent) that chat messages are handed to by webhook.
 * run.ts adds the terminal; tests start the same stack on free ports.
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import type { Logger } from "pino";
import { createLogger } from "../logger.js";
import { startServer, type Running } from "../server.js";
import { prettyDestination } from "./prettyLog.js";
import { startDevSignIn, type DevSignIn } from "./signIn.js";
import { startExampleAgent, type ExampleAgent } from "../../examples/agent/agent.js";

export interface DevStackOptions {
  /** 0: a free port. Default 8080. */
  readonly gatewayPort?: number;
  /** 0: a free port. Default 3000. */
  readonly devPort?: number;
  /** Default localhost (loopback only). */
  readonly host?: string;
  readonly agentStepDelayMs?: number;
  readonly logLevel?: string;
  /** Default 9464; 0 for any free port. */
  readonly metricsPort?: number;
  readonly logger?: Logger;
}

export interface DevStack {
  readonly gateway: Running;
  readonly signIn: DevSignIn;
  readonly agent: ExampleAgent;
  /** http://localhost:8080 */
  readonly gatewayUrl: string;
  /** http://localhost:3000: the page, and the one origin the gateway allows. */
  readonly pageUrl: string;
  /** The internal API's bearer secret: generated at start, gone when the process ends. */
  readonly serviceSecret: string;
  close(): Promise<void>;
}

export async function startDevStack(options: DevStackOptions = {}): Promise<DevStack> {
  const host = options.host ?? "localhost";
  const urlHost = host.includes(":") ? `[${host}]` : host;
  // The gateway must know the page's origin before it starts, and the page the gateway's URL: fix both ports first.
  const [gatewayPort, devPort] = await Promise.all([portOrFree(options.gatewayPort ?? 8080, host), portOrFree(options.devPort ?? 3000, host)]);
  const pageUrl = `http://${urlHost}:${devPort}`;
  const gatewayUrl = `http://${urlHost}:${gatewayPort}`;

  // Ephemeral: nothing signed with these outlives the process, and nothing in the repo can mint a token for any gateway.
  const jwtKey = randomBytes(32).toString("base64url");
  const serviceSecret = randomBytes(32).toString("base64url");
  const webhookSecret = `whsec_${randomBytes(32).toString("base64")}`;
  const logLevel = options.logLevel ?? "info";
  const logger = options.logger ?? createLogger({ level: logLevel, destination: prettyDestination(), base: {} });

  // The agent backend first (on a free loopback port): the gateway needs its webhook URL to start.
  const agent = await startExampleAgent({
    gatewayUrl,
    serviceSecret,
    webhookSecret,
    host: host === "localhost" ? "127.0.0.1" : host,
    stepDelayMs: options.agentStepDelayMs ?? 400,
    log: (line) => logger.child({ component: "example-agent" }).info(line, String(line.event ?? "agent")),
  });
  const gateway = await startServer(
    {
      // An explicit environment, not process.env: a REDIS_URL or NODE_ENV=production in the shell must not leak into a dev run.
      PORT: String(gatewayPort),
      HOST: host,
      JWT_SECRET_KEY: jwtKey,
      SERVICE_SECRET: serviceSecret,
      ALLOWED_ORIGINS: pageUrl,
      AGENT_WEBHOOK_URL: agent.webhookUrl,
      AGENT_WEBHOOK_SECRET: webhookSecret,
      LOG_LEVEL: logLevel,
      METRICS_PORT: String(options.metricsPort ?? 9464),
    },
    { logger },
  ).catch(async (err: unknown) => {
    await agent.close();
    throw err;
  });
  let signIn: DevSignIn;
  try {
    signIn = await startDevSignIn({ gatewayUrl, jwtKey, port: devPort, host, logger: logger.child({ component: "dev-sign-in" }) });
  } catch (err) {
    await Promise.allSettled([gateway.app.close(), agent.close()]);
    throw err;
  }
  return {
    gateway,
    signIn,
    agent,
    gatewayUrl,
    pageUrl,
    serviceSecret,
    async close() {
      await Promise.allSettled([signIn.close(), gateway.app.close()]);
      await agent.close();
    },
  };
}

async function portOrFree(port: number, host: string): Promise<number> {
  if (port !== 0) return port;
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}
