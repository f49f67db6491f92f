/**
 * The browser tests' world: a real gateway (startServer, as `npm start` runs
 * it) with a real redis-server, and the dev sign-in stand-in serving the demo
 * page. The browsers are in ./engines.
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { buildAssets, type Assets } from "../../service/src/dev/assets.js";
import { startDevSignIn, type DevSignIn } from "../../service/src/dev/signIn.js";
import { createLogger } from "../../service/src/logger.js";
import { startServer, type Running } from "../../service/src/server.js";
import { LogCapture } from "../support/gateway.js";
import { startExampleAgent, type ExampleAgent } from "../../service/examples/agent/agent.js";

/** Where screenshots go: the test output (CI sets E2E_ARTIFACTS under its output folder). */
export const ARTIFACTS = process.env.E2E_ARTIFACTS ?? fileURLToPath(new URL("./artifacts/", import.meta.url));
const HOST = "127.0.0.1";

export interface GatewayUnderTest {
  readonly url: string;
  readonly port: number;
  readonly env: Record<string, string>;
  readonly serviceSecret: string;
  readonly jwtKey: string;
  readonly logs: LogCapture;
  running: Running;
  /** The example agent backend the gateway hands chat messages to; it outlives a gateway restart, as a real one would. */
  readonly agent: ExampleAgent;
  /** Closes the app the way SIGTERM does (sockets get 4012; the agent's runs in flight carry on and publish once it is back). */
  stop(): Promise<void>;
  /** Stops the gateway (if running) and the agent backend. */
  dispose(): Promise<void>;
  /** A new instance on the same port, with the same settings and store. */
  start(): Promise<void>;
}

/** A gateway allowing `origins`, on a port picked now so that a restart can take it again. */
/** Without `redisUrl`: the embedded in-memory store, as `npm run dev` runs it (a restart loses the history). */
export async function startGateway(options: { redisUrl?: string; origins: string[]; env?: Record<string, string> }): Promise<GatewayUnderTest> {
  const port = await freePort();
  const jwtKey = randomBytes(32).toString("base64url");
  const serviceSecret = randomBytes(32).toString("base64url");
  const webhookSecret = `whsec_${randomBytes(32).toString("base64")}`;
  const logs = new LogCapture();
  const { AGENT_STEP_DELAY_MS: stepDelay, ...gatewayEnv } = options.env ?? {};
  const agent = await startExampleAgent({
    gatewayUrl: `http://${HOST}:${port}`,
    serviceSecret,
    webhookSecret,
    host: HOST,
    stepDelayMs: Number(stepDelay ?? 100),
    log: () => undefined,
  });
  const env = {
    PORT: String(port),
    HOST,
    JWT_SECRET_KEY: jwtKey,
    SERVICE_SECRET: serviceSecret,
    ...(options.redisUrl === undefined ? {} : { REDIS_URL: options.redisUrl }),
    ALLOWED_ORIGINS: options.origins.join(","),
    METRICS_PORT: "0",
    AGENT_WEBHOOK_URL: agent.webhookUrl,
    AGENT_WEBHOOK_SECRET: webhookSecret,
    SHUTDOWN_GRACE_MS: "3000",
    ...gatewayEnv,
  };
  const launch = () => startServer(env, { logger: createLogger({ level: "info", destination: logs }) });
  const gateway: GatewayUnderTest = {
    url: `http://${HOST}:${port}`,
    port,
    env,
    serviceSecret,
    jwtKey,
    logs,
    running: await launch(),
    agent,
    async stop() {
      const { app } = gateway.running;
      const closed = app.close();
      // Known gateway issue (reported): app.close() waits for HTTP connections
      // that never sent a request (Chromium pre-opens them) until the 60 s header
      // timeout. By then the sockets have had their 4012; drop what is left.
      const timer = setTimeout(() => app.server.closeAllConnections(), 3000);
      try {
        await closed;
      } finally {
        clearTimeout(timer);
      }
    },
    async start() {
      gateway.running = await launch();
    },
    async dispose() {
      if (gateway.running.app.server.listening) await gateway.stop();
      await agent.close();
    },
  };
  return gateway;
}

let assets: Promise<Assets> | undefined;

/** The demo page and its sign-in stand-in, for `gateway`, on a port of its own. */
export async function startPage(gateway: { url: string; jwtKey: string }, port?: number): Promise<DevSignIn> {
  assets ??= buildAssets();
  return startDevSignIn({ gatewayUrl: gateway.url, jwtKey: gateway.jwtKey, port: port ?? 0, host: HOST, assets: await assets });
}

export async function internal(gateway: GatewayUnderTest, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gateway.url}/internal/v1${path}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${gateway.serviceSecret}`,
      "x-service-id": "e2e",
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export async function publish(gateway: GatewayUnderTest, userId: string, text: string): Promise<number> {
  const { status, body } = await internal(gateway, `/users/${encodeURIComponent(userId)}/events`, {
    type: "agent_thinking",
    run_id: "backend-run",
    thread_id: "web-demo",
    data: { text },
  });
  if (status !== 202) throw new Error(`publish failed: ${status} ${JSON.stringify(body)}`);
  return body.seq as number;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
