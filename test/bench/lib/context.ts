/**
 * What every benchmark gets from the runner, and what it hands back.
 */
import { join } from "node:path";
import { ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "../../support/gateway.js";
import { LOG_DIR, type CpuPlan } from "./procs.js";

export { ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET };

export interface BenchOptions {
  readonly rounds: number;
  readonly plan: CpuPlan;
  /** Write a V8 CPU profile of every gateway process (--cpu-prof) into profileDir. */
  readonly profile: boolean;
  readonly profileDir: string;
  /** Sizes that can be turned down on a smaller machine. */
  readonly sizes: {
    readonly idleConnections: number;
    readonly stormClients: number;
    readonly deliveryUsers: number;
  };
  /** Seconds per measurement window of the rate benchmarks. */
  readonly seconds: number;
  log(message: string): void;
}

export interface Target {
  readonly bench: string;
  readonly target: string;
  readonly measured: string;
  /** undefined: reported, no pass/fail. */
  readonly met: boolean | undefined;
}

export interface BenchResult {
  readonly id: string;
  readonly title: string;
  /** Markdown blocks: tables and short method notes. */
  readonly sections: string[];
  readonly targets: Target[];
  readonly raw: unknown;
}

let extraEnv: Record<string, string> = {};
/** Settings added to every gateway of the run (`--gateway-env LOG_LEVEL=warn,…`), to measure a configuration change. */
export function setGatewayEnv(env: Record<string, string>): void {
  extraEnv = env;
}

/** The gateway's production configuration for a benchmark, with the limits that would throttle the load raised. */
export function gatewayEnv(redisUrl: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: "production",
    REDIS_URL: redisUrl,
    ALLOWED_ORIGINS: ORIGIN,
    JWT_SECRET_KEY: TEST_JWT_KEY,
    SERVICE_SECRET: TEST_SERVICE_SECRET,
    LOG_LEVEL: "info",
    // The limits are policy, not cost: the rate-limit counters are still
    // incremented in Redis on every request, they just never refuse.
    TICKET_RATE_PER_USER: "100000",
    TICKET_RATE_PER_IP: "1000000",
    // Pre-issued tickets must outlive the preparation of a round.
    TICKET_TTL_SECONDS: "300",
    ...overrides,
    ...extraEnv,
  };
}

export function gatewayNodeArgs(options: BenchOptions, name: string): string[] {
  // One directory per process: tsx's loader thread writes a profile of its own
  // next to the main thread's (the main thread's is the large one).
  return options.profile ? ["--cpu-prof", "--cpu-prof-dir", join(options.profileDir, name)] : [];
}

export function users(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(5, "0")}`);
}

export const DEFAULT_PROFILE_DIR = join(LOG_DIR, "profiles");
