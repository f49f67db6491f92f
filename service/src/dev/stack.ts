/**
 * `npm run dev` as a function: the gateway (the real app, from
 * service/src/server.ts, with the embedded store), the sign-in stand-in,
 * sharing one key (run.ts keeps it in .tmp/), and the example agent backend
 * (service/examples/agent) that chat messages are handed to by webhook.
 * run.ts adds the terminal; tests start the same stack on free ports.
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import type { Logger } from "pino";
import { createLogger } from "../logger.js";
import { startServer, type Running } from "../server.js";
import { newDevKeys, type DevKeys } from "./keys.js";
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
  /** Default: new ones, gone with the process. run.ts passes the ones kept in .tmp/ (keys.ts). */
  readonly keys?: DevKeys;
}

export interface DevStack {
  readonly gateway: Running;
  readonly signIn: DevSignIn;
  readonly agent: ExampleAgent;
  /** http://localhost:8080 */
  readonly gatewayUrl: string;
  /** http://localhost:3000: the page, and the one origin the gateway allows. */
  readonly pageUrl: string;
  /** The internal API's bearer secret: a dev key, like the JWT key (keys.ts). */
  readonly serviceSecret: string;
  close(): Promise<void>;
}

export async function startDevStack(options: DevStackOptions = {}): Promise<DevStack> {
  const host = options.host ?? "localhost";
  const urlHost = host.includes(":") ? `[${host}]` : host;
  // The gateway must know the page's origin before it starts, and the page the gateway's URL: fix both ports first.
  const metricsPort = options.metricsPort ?? 9464;
  await assertPortsFree(host, [
    [options.gatewayPort ?? 8080, "GATEWAY_PORT"],
    [options.devPort ?? 3000, "DEV_PORT"],
    [metricsPort, "METRICS_PORT"],
  ]);
  const [gatewayPort, devPort] = await Promise.all([portOrFree(options.gatewayPort ?? 8080, host), portOrFree(options.devPort ?? 3000, host)]);
  const pageUrl = `http://${urlHost}:${devPort}`;
  const gatewayUrl = `http://${urlHost}:${gatewayPort}`;

  // Generated on this machine (never in the repo), so nothing in the repo can mint a token for any gateway.
  const { jwtKey, serviceSecret } = options.keys ?? newDevKeys();
  // The webhook key lives as long as the gateway and the agent it links, which always start together.
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
      METRICS_PORT: String(metricsPort),
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

/** Fails naming every busy port at once (with the variable that moves it), rather than the first one listen() trips on. */
async function assertPortsFree(host: string, ports: Array<[number, string]>): Promise<void> {
  const busy: string[] = [];
  for (const [port, variable] of ports) {
    if (port !== 0 && !(await canListen(port, host))) busy.push(`${port} (${variable})`);
  }
  if (busy.length === 0) return;
  const [first] = ports.filter(([port, variable]) => port !== 0 && busy.includes(`${port} (${variable})`));
  throw new Error(
    `port${busy.length === 1 ? "" : "s"} already in use on ${host}: ${busy.join(", ")}. ` +
      `Stop what listens there, or move ${busy.length === 1 ? "it" : "them"}, e.g. ${first![1]}=${first![0] + 1} npm run dev (0: any free port).`,
  );
}

function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
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
