import { SECRETS, secretVersionName, type SecretEnvName } from "./secretNames.js";
import type { Env } from "./config.js";
import type { SecretManagerServiceClient } from "@google-cloud/secret-manager";

/**
 * Reads the gateway's secrets at startup. With SECRETS_SOURCE=env they are
 * already in the environment; with SECRETS_SOURCE=gcp every secret of
 * ./secretNames.ts is read from Secret Manager (`…/versions/latest`) in
 * parallel, and every one that is missing or unreadable is reported at once,
 * by its full resource name, so a deploy that forgot a secret fails at
 * startup instead of answering 403 for days.
 *
 * One exception to failing at once: with SECRETS_PERMISSION_WAIT_SECONDS > 0
 * (the Pulumi program sets 180), a PERMISSION_DENIED read is retried until
 * that much time has passed. The first revision of a new stack starts seconds
 * after its service account was granted access, and IAM changes take
 * "typically 2 minutes" to propagate
 * (https://cloud.google.com/iam/docs/access-change-propagation). A secret
 * that does not exist (NOT_FOUND) or whose version is disabled still fails
 * at once: waiting cannot fix those.
 */

/** The narrow interface to Secret Manager the gateway needs; tests substitute it. */
export interface SecretClient {
  /** Reads one secret version and returns its payload as text. Rejects with an error carrying a gRPC `code`. */
  access(versionName: string): Promise<string>;
  close(): Promise<void>;
}

export interface SecretLoadResult {
  /** Env-style values to overlay on the environment before parseConfig. */
  readonly values: Partial<Record<SecretEnvName, string>>;
  readonly problems: readonly string[];
  /** Env names already reported in `problems`, so parseConfig does not report them twice. */
  readonly reported: ReadonlySet<string>;
}

const GRPC = { NOT_FOUND: 5, PERMISSION_DENIED: 7, FAILED_PRECONDITION: 9, UNAUTHENTICATED: 16, DEADLINE_EXCEEDED: 4, UNAVAILABLE: 14 } as const;
/** Startup must fail within 5 s: leave room for the rest. */
const ACCESS_TIMEOUT_MS = 3500;
/** Between two rounds of PERMISSION_DENIED retries. */
const PERMISSION_RETRY_MS = 5000;
const MAX_PERMISSION_WAIT_SECONDS = 600;

/**
 * SECRETS_PERMISSION_WAIT_SECONDS in ms, read leniently (parseConfig reports
 * a bad value); main.ts extends its startup limit by it.
 */
export function secretsPermissionWaitMs(env: Env): number {
  const raw = env.SECRETS_PERMISSION_WAIT_SECONDS?.trim() ?? "";
  const n = Number(raw);
  return /^\d+$/.test(raw) && n <= MAX_PERMISSION_WAIT_SECONDS ? n * 1000 : 0;
}

/** Time, for the PERMISSION_DENIED wait; tests pass a fake one. */
export interface WaitClock {
  now(): number;
  sleep(ms: number): Promise<void>;
  /** One line per retry round: which secrets are still denied (names only), how long it has waited. */
  report(line: { event: "secret_permission_wait"; secrets: string[]; waited_ms: number; limit_ms: number }): void;
}

const realClock: WaitClock = {
  now: Date.now,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  report: (line) => process.stderr.write(`${JSON.stringify({ severity: "WARNING", message: "secret access not granted yet, retrying", ...line })}\n`),
};

export async function loadSecrets(env: Env, connect: () => Promise<SecretClient>, clock: WaitClock = realClock): Promise<SecretLoadResult> {
  // Read exactly as parseConfig reads them (trimmed; empty is unset), or the two disagree on the source, project or names.
  const str = (name: string) => env[name]?.trim() || undefined;
  if ((str("SECRETS_SOURCE") ?? "env") !== "gcp") return { values: {}, problems: [], reported: new Set() };
  const project = str("GCP_PROJECT") ?? str("GOOGLE_CLOUD_PROJECT");
  const serviceId = str("SERVICE_ID") ?? "chat-gateway";
  if (!project) return { values: {}, problems: [], reported: new Set() }; // parseConfig reports the missing project
  const client = await connect();
  const values: Partial<Record<SecretEnvName, string>> = {};
  const problems: string[] = [];
  const reported = new Set<string>();
  const usesJwks = str("AUTH_JWKS_URL") !== undefined;

  const waitMs = secretsPermissionWaitMs(env);
  const started = clock.now();
  /** Reads each spec once; returns those denied, to retry. */
  const readAll = (specs: readonly (typeof SECRETS)[number][], final: boolean) =>
    Promise.all(
      specs.map(async (spec) => {
        const name = secretVersionName(project, serviceId, spec);
        const required =
          (spec.required && !(usesJwks && spec.env === "JWT_SECRET_KEY")) || (spec.env === "AGENT_WEBHOOK_SECRET" && str("AGENT_WEBHOOK_URL") !== undefined);
        try {
          const value = await withTimeout(client.access(name), ACCESS_TIMEOUT_MS);
          if (value.trim() === "") throw Object.assign(new Error("empty payload"), { code: "EMPTY" });
          values[spec.env] = value;
        } catch (err) {
          const code = (err as { code?: unknown }).code;
          // An optional secret with no version, or whose latest version was disabled
          // when a key rotation ended, is simply absent.
          if ((code === GRPC.NOT_FOUND || code === GRPC.FAILED_PRECONDITION) && !required) return [];
          if (code === GRPC.PERMISSION_DENIED && !final) return [spec];
          reported.add(spec.env);
          const waited = code === GRPC.PERMISSION_DENIED && waitMs > 0 ? ` (still, after ${Math.round((clock.now() - started) / 1000)} s of retries)` : "";
          problems.push(`Secret ${spec.env} could not be read from Secret Manager (${name}): ${describe(code)}${waited}`);
        }
        return [];
      }),
    ).then((denied) => denied.flat());

  try {
    let denied = await readAll(SECRETS, waitMs === 0);
    while (denied.length > 0) {
      const waited = clock.now() - started;
      clock.report({ event: "secret_permission_wait", secrets: denied.map((s) => s.env), waited_ms: waited, limit_ms: waitMs });
      await clock.sleep(Math.min(PERMISSION_RETRY_MS, Math.max(0, waitMs - waited)));
      denied = await readAll(denied, clock.now() - started >= waitMs);
    }
  } finally {
    await client.close().catch(() => undefined);
  }
  return { values, problems, reported };
}

function describe(code: unknown): string {
  switch (code) {
    case GRPC.NOT_FOUND:
      return "NOT_FOUND: the secret or its latest version does not exist. Deploy it (pulumi up) or add a version.";
    case GRPC.PERMISSION_DENIED:
      return "PERMISSION_DENIED: the service account lacks roles/secretmanager.secretAccessor on this secret.";
    case GRPC.FAILED_PRECONDITION:
      return "FAILED_PRECONDITION: the latest version is disabled or destroyed.";
    case GRPC.UNAUTHENTICATED:
      return "UNAUTHENTICATED: no valid Google credentials.";
    case GRPC.UNAVAILABLE:
      return "UNAVAILABLE: Secret Manager could not be reached (network, DNS or Private Google Access).";
    case "TIMEOUT":
    case GRPC.DEADLINE_EXCEEDED:
      return `no answer within ${ACCESS_TIMEOUT_MS} ms.`;
    case "EMPTY":
      return "the latest version is empty.";
    default:
      return `error code ${String(code ?? "unknown")}.`;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error("timeout"), { code: "TIMEOUT" })), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The real client, loaded only when SECRETS_SOURCE=gcp. `options` lets tests point it at a local fake server. */
export async function createGcpSecretClient(options: ConstructorParameters<typeof SecretManagerServiceClient>[0] = {}): Promise<SecretClient> {
  const { SecretManagerServiceClient } = await import("@google-cloud/secret-manager");
  const client = new SecretManagerServiceClient(options);
  return {
    async access(name) {
      const [version] = await client.accessSecretVersion({ name }, { timeout: ACCESS_TIMEOUT_MS, retry: null });
      const data = version.payload?.data;
      return typeof data === "string" ? data : Buffer.from(data ?? new Uint8Array()).toString("utf8");
    },
    close: () => client.close(),
  };
}
