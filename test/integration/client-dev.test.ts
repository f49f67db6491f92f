/**
 * `npm run dev`: the gateway and the sign-in stand-in, sharing an ephemeral
 * key. The stand-in is a separate server; the gateway accepts its tokens only
 * because it is configured with the same key, like any auth service's.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import { Writable } from "node:stream";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../service/src/logger.js";
import { loadDevKeys } from "../../service/src/dev/keys.js";
import { startDevStack, type DevStack } from "../../service/src/dev/stack.js";
import { clientFor, opened } from "./client-harness.js";
import { until } from "../support/wait.js";

const silent = () => createLogger({ level: "info", destination: new Writable({ write: (_c, _e, done) => done() }) });
let stack: DevStack;

beforeAll(async () => {
  stack = await startDevStack({ gatewayPort: 0, devPort: 0, metricsPort: 0, host: "127.0.0.1", agentStepDelayMs: 0, logger: silent() });
});
afterAll(async () => {
  await stack?.close();
});

async function signIn(base: string, userId: string): Promise<Response> {
  return fetch(`${base}/dev/sign-in`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user_id: userId }) });
}

describe("the sign-in stand-in", () => {
  it("serves the page with a CSP that allows only itself and the gateway", async () => {
    const res = await fetch(stack.pageUrl);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('data-testid="status"');
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain(`connect-src 'self' ${stack.gatewayUrl} ws://${new URL(stack.gatewayUrl).host}`);
    expect(csp).toContain("script-src 'self'");
  });

  it("serves the SDK bundle, and the page script loads it as a separate module", async () => {
    const sdk = await (await fetch(`${stack.pageUrl}/gateway-client.js`)).text();
    expect(sdk).toMatch(/export\s*\{[^}]*GatewayClient/);
    expect(sdk).toContain("sourceMappingURL=gateway-client.js.map");
    expect((await fetch(`${stack.pageUrl}/gateway-client.js.map`)).status).toBe(200);
    const app = await (await fetch(`${stack.pageUrl}/app.js`)).text();
    expect(app).toMatch(/from\s*"\.\/gateway-client\.js"/);
    expect(app).not.toContain("class GatewayClient"); // not a private copy
  });

  it("serves the tabs layer as a separate module too, loading the same SDK bundle", async () => {
    const tabs = await (await fetch(`${stack.pageUrl}/gateway-client-tabs.js`)).text();
    expect(tabs).toMatch(/^import\s*\{[^}]*GatewayClient[^}]*\}\s*from\s*"\.\/gateway-client\.js"/);
    expect(tabs).toContain("sourceMappingURL=gateway-client-tabs.js.map");
    const app = await (await fetch(`${stack.pageUrl}/app.js`)).text();
    expect(app).toMatch(/from\s*"\.\/gateway-client-tabs\.js"/);
  });

  it("tells the page where the gateway is", async () => {
    expect(await (await fetch(`${stack.pageUrl}/config.json`)).json()).toEqual({ gatewayUrl: stack.gatewayUrl });
  });

  it("mints an ordinary HS256 user token: sub, iat, exp in an hour", async () => {
    const res = await signIn(stack.pageUrl, "alice");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const { token } = (await res.json()) as { token: string };
    expect(decodeProtectedHeader(token)).toEqual({ alg: "HS256", typ: "JWT" });
    const claims = decodeJwt(token);
    expect(claims.sub).toBe("alice");
    expect(claims.exp! - Math.floor(Date.now() / 1000)).toBeGreaterThan(3590);
    expect((await signIn(stack.pageUrl, "not a user id!")).status).toBe(400);
  });
});

describe("the gateway in dev mode", () => {
  it("accepts the stand-in's tokens from the page's origin only", async () => {
    const { token } = (await (await signIn(stack.pageUrl, "dev-1")).json()) as { token: string };
    const fromPage = clientFor({ url: stack.gatewayUrl }, "dev-1", { origin: stack.pageUrl, getToken: async () => token });
    await opened(fromPage);
    fromPage.client.close();
    const elsewhere = clientFor({ url: stack.gatewayUrl }, "dev-1", { origin: "http://localhost:4000", getToken: async () => token });
    await until("stopped", () => elsewhere.client.state === "closed");
    expect(elsewhere.rec.states.at(-1)?.errorCode).toBe("ORIGIN_FORBIDDEN");
  });

  it("hands a chat message to the example agent backend by signed webhook, which runs it through the internal API", async () => {
    const { token } = (await (await signIn(stack.pageUrl, "dev-chat")).json()) as { token: string };
    const c = clientFor({ url: stack.gatewayUrl }, "dev-chat", { origin: stack.pageUrl, getToken: async () => token });
    await opened(c);
    const id = c.client.send("hello agent", { threadId: "dev-thread" });
    await until("ack", () => c.rec.acks.some((a) => a.messageId === id));
    await until("completed", () => c.rec.events.some((e) => e.type === "agent_completed"));
    expect(c.rec.events.map((e) => e.type)).toEqual(["agent_started", "agent_thinking", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]);
    expect(stack.agent.webhookUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/webhook$/);
    c.client.close();
  });

  it("has no sign-in route and no shortcut of its own", async () => {
    const res = await signIn(stack.gatewayUrl, "dev-2");
    expect(res.status).toBe(404);
  });

  it("uses keys generated at start: another dev run's token is refused, and so is its service secret", async () => {
    const other = await startDevStack({ gatewayPort: 0, devPort: 0, metricsPort: 0, host: "127.0.0.1", logger: silent() });
    try {
      expect(other.serviceSecret).not.toBe(stack.serviceSecret);
      const { token } = (await (await signIn(other.pageUrl, "dev-3")).json()) as { token: string };
      const ticket = await fetch(`${stack.gatewayUrl}/api/v1/auth/websocket_ticket`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
      expect(ticket.status).toBe(401);
      const publish = (secret: string) =>
        fetch(`${stack.gatewayUrl}/internal/v1/users/dev-3/events`, {
          method: "POST",
          headers: { authorization: `Bearer ${secret}`, "x-service-id": "test", "content-type": "application/json" },
          body: JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t" }),
        });
      expect((await publish(other.serviceSecret)).status).toBe(401);
      expect((await publish(stack.serviceSecret)).status).toBe(202);
    } finally {
      await other.close();
    }
  });
});

describe("npm run dev (the process)", () => {
  it("prints what to open and a dev-only curl line, serves, and exits 0 on SIGTERM", async () => {
    const [gatewayPort, devPort, metricsPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const child = spawn(process.execPath, ["--import", "tsx", "service/src/dev/run.ts"], {
      env: { ...process.env, GATEWAY_PORT: String(gatewayPort), DEV_PORT: String(devPort), METRICS_PORT: String(metricsPort), REDIS_URL: "redis://127.0.0.1:1", DEV_KEYS_FILE: keysFile() },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await until("the banner", () => out.includes("Ctrl-C"), 20_000);
      expect(out).toContain(`Open http://localhost:${devPort}`);
      expect(out).toMatch(/DEV ONLY/);
      expect(out).toMatch(new RegExp(`curl -sS -X POST http://localhost:${gatewayPort}/internal/v1/users/alice/events`));
      expect(out).toContain("embedded in-memory store"); // a REDIS_URL in the shell does not leak into a dev run
      expect(out).toContain("replace alice with the user id you signed in as");
      // Only URLs that work: not Fastify's "Server listening at http://127.0.0.1:…", whose origin the gateway refuses.
      expect(out).not.toContain("Server listening at");
      expect((await fetch(`http://localhost:${devPort}/`)).status).toBe(200);
      expect((await fetch(`http://localhost:${gatewayPort}/healthz`)).status).toBe(200);
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
    await expect(fetch(`http://localhost:${devPort}/`)).rejects.toThrow();
  }, 30_000);
});

describe("npm run dev, restarted or left behind", () => {
  it("keeps its keys across restarts (a token of the last run is still accepted), in a file only its owner reads", async () => {
    const file = keysFile();
    const first = loadDevKeys(file);
    const second = loadDevKeys(file);
    expect(first.created).toBe(true);
    expect(second).toEqual({ ...first, created: false });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const before = await startDevStack({ gatewayPort: 0, devPort: 0, metricsPort: 0, host: "127.0.0.1", logger: silent(), keys: first });
    const { token } = (await (await signIn(before.pageUrl, "dev-4")).json()) as { token: string };
    await before.close();
    const after = await startDevStack({ gatewayPort: 0, devPort: 0, metricsPort: 0, host: "127.0.0.1", logger: silent(), keys: second });
    try {
      const ticket = await fetch(`${after.gatewayUrl}/api/v1/auth/websocket_ticket`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
      expect(ticket.status).toBe(201);
    } finally {
      await after.close();
    }
  });

  it("replaces a keys file that is not its own shape", () => {
    const file = keysFile();
    writeFileSync(file, '{"jwtKey":"short","serviceSecret":42}');
    const keys = loadDevKeys(file);
    expect(keys.created).toBe(true);
    expect(keys.jwtKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it("names every busy port at once, with the variable that moves it", async () => {
    const held = [createServer(), createServer()];
    const ports = await Promise.all(held.map((server) => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)))));
    try {
      await expect(startDevStack({ gatewayPort: ports[0], devPort: 0, metricsPort: ports[1], host: "127.0.0.1", logger: silent() })).rejects.toThrow(
        `ports already in use on 127.0.0.1: ${ports[0]} (GATEWAY_PORT), ${ports[1]} (METRICS_PORT)`,
      );
    } finally {
      for (const server of held) server.close();
    }
  });

  it("stops when the npm that started it is gone (SIGKILL to npm: no signal reaches the dev process)", async () => {
    const [gatewayPort, devPort, metricsPort] = await Promise.all([freePort(), freePort(), freePort()]);
    // Stands in for npm: a parent that starts run.ts and is then killed outright.
    const launcher = spawn(
      process.execPath,
      ["-e", `require("node:child_process").spawn(process.execPath, ["--import", "tsx", "service/src/dev/run.ts"], { stdio: "inherit" }); setInterval(() => {}, 1000);`],
      { env: { ...process.env, GATEWAY_PORT: String(gatewayPort), DEV_PORT: String(devPort), METRICS_PORT: String(metricsPort), DEV_KEYS_FILE: keysFile() }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    launcher.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
    try {
      await until("the banner", () => out.includes("Ctrl-C"), 20_000);
      expect((await fetch(`http://localhost:${gatewayPort}/healthz`)).status).toBe(200);
    } finally {
      launcher.kill("SIGKILL");
    }
    const stoppedServing = async () => !(await fetch(`http://localhost:${gatewayPort}/healthz`).then(() => true, () => false));
    await until("the dev server to stop serving after its launcher died", stoppedServing, 15_000, 200);
  }, 45_000);
});

let keysDir: string | undefined;
/** A fresh keys file path under a temp dir (never the repo's .tmp/). */
function keysFile(): string {
  keysDir ??= mkdtempSync(join(tmpdir(), "gw-dev-keys-"));
  return join(keysDir, `keys-${Math.random().toString(36).slice(2)}.json`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}
