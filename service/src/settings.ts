/**
 * Every environment variable the gateway reads, declared once: its default,
 * its range or allowed values, whether it is a secret, and what it is for
 * (docs/protocol.md §7 and §8.4 are the contract). The service's parser
 * (./config.ts) and the Pulumi program (infra/) both import this table, so a
 * default the program deploys, a range the stack config checks and the value
 * the service accepts cannot drift apart. The rules for values that both
 * sides check (exact origins, webhook keys, loopback hosts) live here too.
 *
 * Only ./secretNames.ts is imported, and nothing with I/O: Pulumi loads this.
 *
 * Why a table and not env-schema or TypeBox: neither is installed, and the ajv
 * that Fastify ships reports "must be <= 65535" or "must match pattern"; the
 * tests and docs promise messages that name the unit and what was given.
 * Most checks span settings (REDIS_URL or a cluster, TLS, the webhook URL and
 * its key, what production requires), which JSON Schema can only say with
 * if/then and no clearer. The integer, choice and secret rules here are the
 * part a schema would cover, in under 60 lines.
 */
import { SECRETS, type SecretEnvName } from "./secretNames.js";

export interface IntegerSetting {
  readonly kind: "integer";
  readonly default: number;
  readonly min: number;
  readonly max: number;
  readonly unit: string;
  readonly description: string;
}
export interface ChoiceSetting {
  readonly kind: "choice";
  /** Unset when the setting has no default (then it is simply absent). */
  readonly default?: string;
  readonly allowed: readonly string[];
  readonly description: string;
}
/** Free text: a URL, a list or a name, checked by the rule ./config.ts applies to it. */
export interface TextSetting {
  readonly kind: "text";
  readonly default?: string;
  readonly description: string;
}
export interface SecretSetting {
  readonly kind: "secret";
  readonly description: string;
}
export type Setting = IntegerSetting | ChoiceSetting | TextSetting | SecretSetting;

const integer = (def: number, min: number, max: number, unit: string, description: string): IntegerSetting =>
  ({ kind: "integer", default: def, min, max, unit, description }) as const;

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
/** The gateway refuses shorter HS256 keys and internal API secrets. */
export const MIN_SECRET_BYTES = 32;

/** The integer settings, in the order docs/protocol.md lists them. */
export const INTEGER_SETTINGS = {
  PORT: integer(8080, 0, 65535, "port", "HTTP and WebSocket listener"),
  TICKET_TTL_SECONDS: integer(30, 1, 300, "s", "lifetime of a WebSocket ticket"),
  TICKET_RATE_PER_USER: integer(30, 1, 100_000, "tickets/min", "tickets per user per minute before 429"),
  TICKET_RATE_PER_IP: integer(600, 1, 1_000_000, "tickets/min", "tickets per client IP per minute before 429"),
  HEARTBEAT_INTERVAL_MS: integer(25_000, 50, 600_000, "ms", "ping interval; two missed pongs close the socket"),
  // Cloud Run ends every request, WebSockets included, at the service's
  // request timeout (at most 3600 s). Closing a little earlier with 4012
  // CONNECTION_AGE means no client ever meets the platform's abrupt cut.
  MAX_CONNECTION_AGE_SECONDS: integer(3300, 1, 3599, "s", "a socket is closed with 4012 CONNECTION_AGE at a random point in the last 10% of this age"),
  // Cloud Run sends SIGTERM and kills the instance 10 s later.
  SHUTDOWN_GRACE_MS: integer(8000, 100, 9500, "ms", "how long a SIGTERM drain may take"),
  MAX_MESSAGE_BYTES: integer(65_536, 256, 16 * 1024 * 1024, "bytes", "largest inbound frame and internal API body"),
  MAX_CONNECTIONS_PER_USER: integer(20, 1, 10_000, "connections", "open sockets per user"),
  // A socket whose unsent bytes pass this is a slow consumer (4429).
  MAX_SEND_BUFFER_BYTES: integer(1024 * 1024, 16 * 1024, 256 * 1024 * 1024, "bytes", "unsent bytes before a slow consumer is closed"),
  // Inbound frames per connection per second (burst: twice this) before 4429 RATE_LIMITED.
  MAX_FRAMES_PER_SECOND: integer(50, 1, 10_000, "frames/s", "inbound frames per connection per second"),
  HISTORY_MAX_EVENTS: integer(1000, 1, 100_000, "events", "events kept per user for resume"),
  HISTORY_TTL_SECONDS: integer(900, 1, 7 * 24 * 3600, "s", "how long the event history of an idle user is kept"),
  METRICS_PORT: integer(9464, 0, 65535, "port", "Prometheus /metrics listener"),
  // Below Cloud Run's 10 s drain: the client is told "not accepted" and resends.
  AGENT_WEBHOOK_TIMEOUT_MS: integer(5000, 100, 60_000, "ms", "how long the agent backend has to answer a hand-off"),
  AGENT_WEBHOOK_MAX_IN_FLIGHT: integer(500, 1, 100_000, "hand-offs", "hand-offs in flight per instance before RATE_LIMITED"),
  AGENT_WEBHOOK_MAX_IN_FLIGHT_PER_USER: integer(8, 1, 1000, "hand-offs", "hand-offs in flight per user before RATE_LIMITED"),
  MESSAGE_IDS_PER_USER: integer(1000, 10, 100_000, "message ids", "accepted message ids remembered per user, so a resend is acked once"),
  // Behind Google's external load balancer and Cloud Run: 2. Directly exposed: 0, or clients could spoof it.
  TRUST_PROXY_HOPS: integer(0, 0, 10, "hops", "proxies whose X-Forwarded-For entries are trusted for the client IP"),
  // IAM grants made seconds earlier take minutes to propagate (./secrets.ts). 0: fail at once.
  SECRETS_PERMISSION_WAIT_SECONDS: integer(0, 0, 600, "s", "how long a PERMISSION_DENIED secret read is retried at startup"),
  // At least the auth service's token lifetime, or an old token works again after it.
  REVOCATION_KEEP_SECONDS: integer(86_400, 60, 30 * 86_400, "s", "how long a revoke's not_before keeps refusing older tokens"),
} as const satisfies Record<string, IntegerSetting>;

export const CHOICE_SETTINGS = {
  SECRETS_SOURCE: { kind: "choice", default: "env", allowed: ["env", "gcp"], description: "where the secrets come from: the environment or Secret Manager" },
  LOG_LEVEL: { kind: "choice", default: "info", allowed: LOG_LEVELS, description: "pino log level" },
  REDIS_TLS: { kind: "choice", allowed: ["true", "false"], description: "whether REDIS_CLUSTER_NODES are reached over TLS" },
} as const satisfies Record<string, ChoiceSetting>;

export const TEXT_SETTINGS = {
  NODE_ENV: { kind: "text", description: "production makes REDIS_URL and ALLOWED_ORIGINS required and JWKS https-only" },
  HOST: { kind: "text", default: "0.0.0.0", description: "listen address" },
  GCP_PROJECT: { kind: "text", description: "the project that holds the secrets (SECRETS_SOURCE=gcp); GOOGLE_CLOUD_PROJECT also works" },
  GOOGLE_CLOUD_PROJECT: { kind: "text", description: "fallback for GCP_PROJECT" },
  SERVICE_ID: { kind: "text", default: "chat-gateway", description: "names the service and prefixes every secret id" },
  AUTH_JWKS_URL: { kind: "text", description: "JWKS of the auth service (RS256/ES256 tokens), instead of or beside JWT_SECRET_KEY" },
  JWT_ISSUER: { kind: "text", description: "required iss of user tokens" },
  JWT_AUDIENCE: { kind: "text", description: "required aud of user tokens" },
  REDIS_URL: { kind: "text", description: "redis:// or rediss:// URL of one Redis" },
  REDIS_CLUSTER_NODES: { kind: "text", description: "comma-separated host:port of some Redis Cluster nodes, instead of REDIS_URL" },
  REDIS_USERNAME: { kind: "text", description: "Redis ACL user; unset: the default user" },
  ALLOWED_ORIGINS: { kind: "text", default: "", description: "comma-separated exact origins allowed to call the HTTP API" },
  AGENT_WEBHOOK_URL: { kind: "text", description: "the agent backend's webhook; unset: chat_message answers CHAT_UNAVAILABLE" },
} as const satisfies Record<string, TextSetting>;

/** The secrets of ./secretNames.ts, as settings: declared there, not copied here. */
export const SECRET_SETTINGS = Object.fromEntries(
  SECRETS.map((spec) => [spec.env, { kind: "secret", description: spec.description }]),
) as Record<SecretEnvName, SecretSetting>;

export type IntegerSettingName = keyof typeof INTEGER_SETTINGS;
export type ChoiceSettingName = keyof typeof CHOICE_SETTINGS;
export type TextSettingName = keyof typeof TEXT_SETTINGS;
export type SettingName = IntegerSettingName | ChoiceSettingName | TextSettingName | SecretEnvName;

/** Every environment variable the gateway reads. */
export const SETTINGS: Readonly<Record<SettingName, Setting>> = { ...INTEGER_SETTINGS, ...CHOICE_SETTINGS, ...TEXT_SETTINGS, ...SECRET_SETTINGS };

/** The problem with an integer setting's raw text, or undefined when it is a whole number in range. */
export function integerProblem(name: string, raw: string, spec: Pick<IntegerSetting, "min" | "max" | "unit">): string | undefined {
  const n = Number(raw);
  if (/^-?\d+$/.test(raw) && Number.isSafeInteger(n) && n >= spec.min && n <= spec.max) return undefined;
  return `${name} must be an integer from ${spec.min} to ${spec.max} (${spec.unit}); got "${raw}"`;
}

/** The problem with a choice setting's raw text, or undefined when it is allowed. */
export function choiceProblem(name: string, raw: string, allowed: readonly string[]): string | undefined {
  if (allowed.includes(raw)) return undefined;
  const options = allowed.length === 2 ? `"${allowed[0]}" or "${allowed[1]}"` : `one of ${allowed.join(", ")}`;
  return `${name} must be ${options}; got "${raw}"`;
}

/**
 * An origin exactly as a browser sends it (`https://chat.example.com`, a port
 * when not the scheme's). WHATWG URL accepts `https://*.example.com` as an
 * origin, but no browser sends it: a wildcard would match nothing.
 */
export function isExactOrigin(origin: string): boolean {
  try {
    return new URL(origin).origin === origin && !origin.includes("*");
  } catch {
    return false;
  }
}

/** localhost, ::1 or 127.x.y.z: where plain http to an agent sidecar is allowed. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** A Standard Webhooks key: `whsec_` and the base64 of 24 to 64 bytes. */
export function isWebhookSecret(secret: string): boolean {
  const match = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret);
  if (!match) return false;
  const bytes = Buffer.from(match[1]!, "base64").length;
  return bytes >= 24 && bytes <= 64;
}
