import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * docs/protocol.md §7: "A missing or malformed required setting stops startup
 * within 5 s with exit code 1 and one message that names every problem at
 * once." These tests run the real entry point, service/src/main.ts, as its
 * own process (`node --import tsx`), with an environment of our choosing and
 * nothing inherited, and read what it prints.
 *
 * Not covered here: SECRETS_SOURCE=gcp with a project set. The real process
 * would then ask the GCE metadata server and secretmanager.googleapis.com,
 * which is network access this suite must not make; the same failures
 * (unreachable, hung, missing secrets) are covered against a local fake
 * Secret Manager in secret-manager.test.ts.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const STARTUP_LIMIT_MS = 5000;

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
}

/** Starts `node --import tsx service/src/main.ts` with exactly `env` (plus PATH). */
function startMain(env: Record<string, string>) {
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", "service/src/main.ts"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  // Never leave a process behind, whatever the test does.
  const guard = setTimeout(() => child.kill("SIGKILL"), 15_000);
  const exited = new Promise<Exit>((resolve) => {
    child.once("close", (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, stdout, stderr, elapsedMs: Date.now() - started });
    });
  });
  return { child, exited, output: () => ({ stdout, stderr }) };
}

/** The one JSON line main.ts writes to stderr when startup fails. */
function failureLine(exit: Exit): { severity: string; event: string; message: string } {
  const lines = exit.stderr.split("\n").filter((l) => l.trim() !== "");
  const json = lines.filter((l) => l.startsWith("{"));
  expect(json, `stderr: ${exit.stderr}`).toHaveLength(1);
  return JSON.parse(json[0] as string) as { severity: string; event: string; message: string };
}

const GOOD_JWT_KEY = "startup-test-jwt-key-never-printed-0123456789";
const GOOD_SERVICE_SECRET = "startup-test-service-secret-never-printed-01234";

describe("a broken configuration", () => {
  it("production with nothing set exits 1 within 5 s, naming all four required settings in one message", async () => {
    const exit = await startMain({ NODE_ENV: "production" }).exited;
    expect(exit.code).toBe(1);
    expect(exit.elapsedMs).toBeLessThan(STARTUP_LIMIT_MS);
    const line = failureLine(exit);
    expect(line.severity).toBe("CRITICAL");
    expect(line.event).toBe("startup_failed");
    expect(line.message).toMatch(/^Invalid configuration \(4 problems\)/);
    for (const name of ["REDIS_URL", "ALLOWED_ORIGINS", "JWT_SECRET_KEY", "SERVICE_SECRET"]) {
      expect(line.message).toContain(`${name} is required`);
    }
  });

  it("every malformed setting is named at once, and no secret value appears in the output", async () => {
    const secrets = {
      JWT_SECRET_KEY: "short-jwt-key-value",
      JWT_SECRET_KEY_PREVIOUS: "short-previous-key",
      SERVICE_SECRET: GOOD_SERVICE_SECRET,
      REDIS_PASSWORD: "redis-auth-string-never-printed-012345",
    };
    const exit = await startMain({
      NODE_ENV: "production",
      ...secrets,
      REDIS_URL: "http://default:password-inside-the-url@10.0.0.3:6379",
      ALLOWED_ORIGINS: "https://chat.example.com/",
      PORT: "eighty",
      TICKET_TTL_SECONDS: "0",
    }).exited;
    expect(exit.code).toBe(1);
    expect(exit.elapsedMs).toBeLessThan(STARTUP_LIMIT_MS);
    const { message } = failureLine(exit);
    expect(message).toMatch(/^Invalid configuration \(6 problems\)/);
    expect(message).toContain("JWT_SECRET_KEY must be at least 32 bytes");
    expect(message).toContain("JWT_SECRET_KEY_PREVIOUS must be at least 32 bytes");
    expect(message).toContain("REDIS_URL must be a URL with scheme");
    expect(message).toContain("ALLOWED_ORIGINS entry");
    expect(message).toContain("PORT must be an integer");
    expect(message).toContain("TICKET_TTL_SECONDS must be an integer");
    const output = exit.stdout + exit.stderr;
    for (const value of [...Object.values(secrets), "password-inside-the-url"]) expect(output).not.toContain(value);
  });

  it("a plain-http agent webhook in production, without its secret, exits 1 within 5 s naming both, and never prints the URL", async () => {
    const exit = await startMain({
      NODE_ENV: "production",
      JWT_SECRET_KEY: GOOD_JWT_KEY,
      SERVICE_SECRET: GOOD_SERVICE_SECRET,
      REDIS_URL: "redis://127.0.0.1:1",
      ALLOWED_ORIGINS: "https://chat.example.com",
      AGENT_WEBHOOK_URL: "http://agent.internal.example/hook?token=webhook-url-token-never-printed",
    }).exited;
    expect(exit.code).toBe(1);
    expect(exit.elapsedMs).toBeLessThan(STARTUP_LIMIT_MS);
    const { message } = failureLine(exit);
    expect(message).toMatch(/^Invalid configuration \(2 problems\)/);
    expect(message).toContain("AGENT_WEBHOOK_URL must be https:// in production");
    expect(message).toContain("AGENT_WEBHOOK_SECRET is required when AGENT_WEBHOOK_URL is set");
    expect(exit.stdout + exit.stderr).not.toContain("webhook-url-token-never-printed");
  });

  it("outside production, JWT_SECRET_KEY and SERVICE_SECRET are still required: exit 1 naming both", async () => {
    const exit = await startMain({ NODE_ENV: "development", PORT: "0", METRICS_PORT: "0", HOST: "127.0.0.1" }).exited;
    expect(exit.code).toBe(1);
    expect(exit.elapsedMs).toBeLessThan(STARTUP_LIMIT_MS);
    const { message } = failureLine(exit);
    expect(message).toMatch(/^Invalid configuration \(2 problems\)/);
    expect(message).toContain("JWT_SECRET_KEY is required");
    expect(message).toContain("SERVICE_SECRET is required");
  });

  it("SECRETS_SOURCE=gcp without a project exits 1 naming GCP_PROJECT, before any call to Google", async () => {
    const exit = await startMain({ NODE_ENV: "production", SECRETS_SOURCE: "gcp", REDIS_URL: "redis://127.0.0.1:1", ALLOWED_ORIGINS: "https://chat.example.com" }).exited;
    expect(exit.code).toBe(1);
    expect(exit.elapsedMs).toBeLessThan(STARTUP_LIMIT_MS);
    const { message } = failureLine(exit);
    expect(message).toContain("GCP_PROJECT is required when SECRETS_SOURCE=gcp");
  });
});

describe("a complete configuration (the control)", () => {
  it("starts, serves /healthz, keeps its secrets out of the output, and exits 0 on SIGTERM", async () => {
    const run = startMain({
      JWT_SECRET_KEY: GOOD_JWT_KEY,
      SERVICE_SECRET: GOOD_SERVICE_SECRET,
      HOST: "127.0.0.1",
      PORT: "0",
      METRICS_PORT: "0",
      SHUTDOWN_GRACE_MS: "2000",
    });
    try {
      let url: string | undefined;
      const deadline = Date.now() + STARTUP_LIMIT_MS;
      while (url === undefined && Date.now() < deadline && run.child.exitCode === null) {
        const listening = run
          .output()
          .stdout.split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as { event?: string; url?: string })
          .find((r) => r.event === "listening");
        url = listening?.url;
        if (url === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      expect(url, `no "listening" line; output: ${JSON.stringify(run.output())}`).toBeDefined();
      const health = await fetch(`${url}/healthz`);
      expect(health.status).toBe(200);
    } finally {
      run.child.kill("SIGTERM");
    }
    const exit = await run.exited;
    expect(exit.code).toBe(0);
    const output = exit.stdout + exit.stderr;
    expect(output).not.toContain(GOOD_JWT_KEY);
    expect(output).not.toContain(GOOD_SERVICE_SECRET);
  });
});
