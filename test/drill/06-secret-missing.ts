/**
 * Drill 6: a secret missing at startup in production mode. The real entry
 * point (`node --import tsx service/src/main.ts`) is started with
 * NODE_ENV=production, a complete configuration, and one secret taken away
 * (or both, or one too short). Nothing else is inherited from this shell.
 *
 * Pass when each start exits with code 1 within 5 s and its output names the
 * secret that is missing, and never prints a secret's value.
 */
import { spawn } from "node:child_process";
import { ROOT } from "../bench/lib/procs.js";
import { check, drill, fmt, ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "./lib.js";

const LIMIT_MS = 5000;

interface Start {
  readonly name: string;
  readonly env: Record<string, string>;
  /** Names the output must contain. */
  readonly names: string[];
}

function run(env: Record<string, string>): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number; output: string }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ["--import", "tsx", "service/src/main.ts"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const guard = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.once("close", (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, ms: performance.now() - t0, output });
    });
  });
}

drill("drill 6: secret missing at startup (production)", 60_000, async () => {
  const base = {
    NODE_ENV: "production",
    REDIS_URL: "redis://127.0.0.1:1",
    ALLOWED_ORIGINS: ORIGIN,
    JWT_SECRET_KEY: TEST_JWT_KEY,
    SERVICE_SECRET: TEST_SERVICE_SECRET,
    PORT: "0",
    METRICS_PORT: "0",
    HOST: "127.0.0.1",
  };
  const without = (...names: string[]) => Object.fromEntries(Object.entries(base).filter(([k]) => !names.includes(k)));
  const starts: Start[] = [
    { name: "JWT_SECRET_KEY missing", env: without("JWT_SECRET_KEY"), names: ["JWT_SECRET_KEY"] },
    { name: "SERVICE_SECRET missing", env: without("SERVICE_SECRET"), names: ["SERVICE_SECRET"] },
    { name: "both missing", env: without("JWT_SECRET_KEY", "SERVICE_SECRET"), names: ["JWT_SECRET_KEY", "SERVICE_SECRET"] },
    { name: "JWT_SECRET_KEY empty", env: { ...base, JWT_SECRET_KEY: "" }, names: ["JWT_SECRET_KEY"] },
    { name: "SERVICE_SECRET too short", env: { ...base, SERVICE_SECRET: "short-secret-value" }, names: ["SERVICE_SECRET"] },
  ];
  // One at a time: each start is timed on its own, not against four others for two cores.
  const results: Array<{ start: Start; exit: Awaited<ReturnType<typeof run>> }> = [];
  for (const start of starts) results.push({ start, exit: await run(start.env) });
  const secrets = [TEST_JWT_KEY, TEST_SERVICE_SECRET, "short-secret-value"];
  const checks = results.flatMap(({ start, exit }) => [
    check(`${start.name}: exit code 1`, exit.code === 1, `${exit.code ?? exit.signal}`),
    check(`${start.name}: within ${LIMIT_MS / 1000} s`, exit.ms < LIMIT_MS, `${fmt(exit.ms, 0)} ms`),
    check(`${start.name}: names ${start.names.join(" and ")}`, start.names.every((n) => exit.output.includes(n)), exit.output.slice(0, 200)),
    check(`${start.name}: prints no secret`, !secrets.some((v) => exit.output.includes(v))),
  ]);
  const figures = results.map(({ start, exit }) => `${start.name} → exit ${exit.code ?? exit.signal} in ${fmt(exit.ms, 0)} ms`).join("; ");
  return { figures, checks };
});
