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

export async function loadSecrets(env: Env, connect: () => Promise<SecretClient>): Promise<SecretLoadResult> {
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

  await Promise.all(
    SECRETS.map(async (spec) => {
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
        if ((code === GRPC.NOT_FOUND || code === GRPC.FAILED_PRECONDITION) && !required) return;
        reported.add(spec.env);
        problems.push(`Secret ${spec.env} could not be read from Secret Manager (${name}): ${describe(code)}`);
      }
    }),
  ).finally(() => client.close().catch(() => undefined));
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
