/**
 * Every setting of the gateway, with its default, its unit and its check, in
 * one place (docs/protocol.md §7 is the contract). Like `ws`, which spreads
 * its defaults and rejects bad options with one clear error, `parseConfig`
 * reads an environment, applies the defaults and reports *every* problem at
 * once, so a broken deploy is fixed in one round instead of five.
 *
 * Nothing here does I/O: secrets are fetched by ./secrets.ts and handed in as
 * part of the environment.
 */

export interface Config {
  readonly port: number;
  readonly host: string;
  readonly production: boolean;
  readonly secretsSource: "env" | "gcp";
  readonly gcpProject: string | undefined;
  readonly jwt: {
    readonly secretKey: string | undefined;
    readonly previousSecretKey: string | undefined;
    readonly jwksUrl: string | undefined;
    readonly issuer: string | undefined;
    readonly audience: string | undefined;
  };
  readonly serviceId: string;
  readonly serviceSecret: string;
  /** The previous internal API secret, also accepted while agent backends move to the new one. */
  readonly previousServiceSecret: string | undefined;
  readonly redis: {
    /** One Redis (REDIS_URL). Unset with no cluster either: the embedded in-memory store (single instance, outside production only). */
    readonly url: string | undefined;
    /**
     * A Redis Cluster (REDIS_CLUSTER_NODES), instead of `url`: some of its
     * nodes, and whether every node is reached over TLS (REDIS_TLS). Unset
     * when REDIS_CLUSTER_NODES is.
     */
    readonly cluster?: { readonly nodes: readonly { readonly host: string; readonly port: number }[]; readonly tls: boolean };
    /** The ACL user to authenticate as (REDIS_USERNAME); unset: the default user (an AUTH string). */
    readonly username: string | undefined;
    readonly password: string | undefined;
    readonly tlsCa: string | undefined;
  };
  readonly secretsPermissionWaitSeconds: number;
  readonly allowedOrigins: readonly string[];
  readonly ticketTtlSeconds: number;
  readonly ticketRatePerUser: number;
  readonly ticketRatePerIp: number;
  readonly heartbeatIntervalMs: number;
  readonly maxConnectionAgeSeconds: number;
  readonly shutdownGraceMs: number;
  readonly maxMessageBytes: number;
  readonly maxConnectionsPerUser: number;
  readonly maxSendBufferBytes: number;
  readonly maxFramesPerSecond: number;
  readonly historyMaxEvents: number;
  readonly historyTtlSeconds: number;
  readonly metricsPort: number;
  readonly logLevel: string;
  /**
   * The agent backend's webhook (docs/protocol.md §5a). Unset: `chat_message`
   * is answered with CHAT_UNAVAILABLE and the gateway serves agent events only.
   */
  readonly agentWebhook: {
    readonly url: string | undefined;
    /** `whsec_…`, required when `url` is set. */
    readonly secret: string | undefined;
    readonly timeoutMs: number;
    /** Hand-offs in flight on this instance, in all and per user, before RATE_LIMITED. */
    readonly maxInFlight: number;
    readonly maxInFlightPerUser: number;
    /** Accepted message ids remembered per user (oldest forgotten first), so a resend is acked without a second hand-off. */
    readonly rememberedPerUser: number;
  };
  readonly trustProxyHops: number;
  readonly revocationKeepSeconds: number;
}

export type Env = Readonly<Record<string, string | undefined>>;

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

/** Integer settings: [name, default, min, max, unit]. */
const INTEGERS = {
  PORT: [8080, 0, 65535, "port"],
  TICKET_TTL_SECONDS: [30, 1, 300, "s"],
  TICKET_RATE_PER_USER: [30, 1, 100_000, "tickets/min"],
  TICKET_RATE_PER_IP: [600, 1, 1_000_000, "tickets/min"],
  HEARTBEAT_INTERVAL_MS: [25_000, 50, 600_000, "ms"],
  // Cloud Run ends every request, WebSockets included, at the service's
  // request timeout (at most 3600 s). Closing a little earlier with 4012
  // CONNECTION_AGE means no client ever meets the platform's abrupt cut.
  MAX_CONNECTION_AGE_SECONDS: [3300, 1, 3599, "s"],
  // Cloud Run sends SIGTERM and kills the instance 10 s later.
  SHUTDOWN_GRACE_MS: [8000, 100, 9500, "ms"],
  MAX_MESSAGE_BYTES: [65_536, 256, 16 * 1024 * 1024, "bytes"],
  MAX_CONNECTIONS_PER_USER: [20, 1, 10_000, "connections"],
  // A socket whose unsent bytes pass this is a slow consumer (4429).
  MAX_SEND_BUFFER_BYTES: [1024 * 1024, 16 * 1024, 256 * 1024 * 1024, "bytes"],
  // Inbound frames per connection per second (burst: twice this) before 4429 RATE_LIMITED.
  MAX_FRAMES_PER_SECOND: [50, 1, 10_000, "frames/s"],
  HISTORY_MAX_EVENTS: [1000, 1, 100_000, "events"],
  HISTORY_TTL_SECONDS: [900, 1, 7 * 24 * 3600, "s"],
  METRICS_PORT: [9464, 0, 65535, "port"],
  // How long the agent backend has to answer a hand-off with 2xx before the
  // client is told "not accepted" (and resends). Below Cloud Run's 10 s drain.
  AGENT_WEBHOOK_TIMEOUT_MS: [5000, 100, 60_000, "ms"],
  AGENT_WEBHOOK_MAX_IN_FLIGHT: [500, 1, 100_000, "hand-offs"],
  AGENT_WEBHOOK_MAX_IN_FLIGHT_PER_USER: [8, 1, 1000, "hand-offs"],
  MESSAGE_IDS_PER_USER: [1000, 10, 100_000, "message ids"],
  // Proxies in front of the gateway whose X-Forwarded-For entries are trusted
  // for the client IP (per-IP rate limit). Behind Google's external load
  // balancer and Cloud Run: 2. Directly exposed: 0, or clients could spoof it.
  TRUST_PROXY_HOPS: [0, 0, 10, "hops"],
  // SECRETS_SOURCE=gcp: how long a PERMISSION_DENIED secret read is retried before startup
  // fails (IAM grants made seconds earlier take minutes to propagate; ./secrets.ts). 0: fail at once.
  SECRETS_PERMISSION_WAIT_SECONDS: [0, 0, 600, "s"],
  // How long a revoke's `not_before` keeps refusing older tokens: at least
  // the auth service's token lifetime, or an old token works again after it.
  REVOCATION_KEEP_SECONDS: [86_400, 60, 30 * 86_400, "s"],
} as const satisfies Record<string, readonly [number, number, number, string]>;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
const MIN_SECRET_BYTES = 32;

export function parseConfig(env: Env, options: { alreadyReported?: ReadonlySet<string> } = {}): Config {
  const problems: string[] = [];
  const reported = options.alreadyReported ?? new Set<string>();
  const str = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === "" ? undefined : v;
  };
  const int = (name: keyof typeof INTEGERS): number => {
    const [def, min, max, unit] = INTEGERS[name];
    const raw = str(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${name} must be an integer from ${min} to ${max} (${unit}); got "${raw}"`);
      return def;
    }
    return n;
  };
  const required = (name: string, why: string): string | undefined => {
    const v = str(name);
    if (v === undefined && !reported.has(name)) problems.push(`${name} is required (${why})`);
    return v;
  };
  const secret = (name: string, value: string | undefined): string | undefined => {
    if (value !== undefined && Buffer.byteLength(value) < MIN_SECRET_BYTES) {
      problems.push(`${name} must be at least ${MIN_SECRET_BYTES} bytes long`);
    }
    return value;
  };
  const url = (name: string, protocols: readonly string[]): string | undefined => {
    const v = str(name);
    if (v === undefined) return undefined;
    try {
      const u = new URL(v);
      if (!protocols.includes(u.protocol)) throw new Error();
    } catch {
      problems.push(`${name} must be a URL with scheme ${protocols.map((p) => p.replace(":", "://")).join(" or ")}`);
    }
    return v;
  };

  const nodeEnv = str("NODE_ENV");
  const production = nodeEnv === "production";

  const secretsSource = str("SECRETS_SOURCE") ?? "env";
  if (secretsSource !== "env" && secretsSource !== "gcp") {
    problems.push(`SECRETS_SOURCE must be "env" or "gcp"; got "${secretsSource}"`);
  }
  const gcpProject = str("GCP_PROJECT") ?? str("GOOGLE_CLOUD_PROJECT");
  if (secretsSource === "gcp" && gcpProject === undefined) {
    problems.push("GCP_PROJECT is required when SECRETS_SOURCE=gcp (the project that holds the secrets)");
  }

  // Keys fetched over plain http could be swapped by anyone on the path: in production, https only.
  const jwksUrl = url("AUTH_JWKS_URL", production ? ["https:"] : ["https:", "http:"]);
  const jwtSecretKey = jwksUrl
    ? secret("JWT_SECRET_KEY", str("JWT_SECRET_KEY"))
    : secret("JWT_SECRET_KEY", required("JWT_SECRET_KEY", "the HS256 key of user tokens, unless AUTH_JWKS_URL is set"));
  const serviceSecret = secret("SERVICE_SECRET", required("SERVICE_SECRET", "the bearer secret of the internal API"));

  // One Redis (REDIS_URL) or one Redis Cluster (REDIS_CLUSTER_NODES), never both; in production one of them.
  const redisUrl = url("REDIS_URL", ["redis:", "rediss:"]);
  const redisCluster = clusterNodes(str("REDIS_CLUSTER_NODES"), problems);
  const redisTls = str("REDIS_TLS");
  if (redisTls !== undefined && redisTls !== "true" && redisTls !== "false") problems.push(`REDIS_TLS must be "true" or "false"; got "${redisTls}"`);
  if (redisUrl !== undefined && redisCluster !== undefined) {
    problems.push("REDIS_URL and REDIS_CLUSTER_NODES are mutually exclusive: set REDIS_URL for one Redis, or REDIS_CLUSTER_NODES for a Redis Cluster");
  } else if (production && redisUrl === undefined && redisCluster === undefined && str("REDIS_CLUSTER_NODES") === undefined && !reported.has("REDIS_URL")) {
    problems.push("REDIS_URL is required (in production, or REDIS_CLUSTER_NODES for a Redis Cluster; the in-memory store serves one instance only)");
  }
  if (redisTls !== undefined && str("REDIS_URL") !== undefined && (redisTls === "true") !== str("REDIS_URL")!.startsWith("rediss:")) {
    problems.push("REDIS_TLS contradicts REDIS_URL: with REDIS_URL the scheme chooses TLS (rediss://); REDIS_TLS is for REDIS_CLUSTER_NODES");
  }
  if (redisCluster !== undefined && redisTls !== "true" && str("REDIS_TLS_CA") !== undefined) {
    problems.push("REDIS_TLS_CA is set but REDIS_TLS is not \"true\": the cluster would be reached without TLS; set REDIS_TLS=true");
  }

  // An ACL user (Memorystore for Redis Cluster's ACL policy) authenticates with REDIS_PASSWORD.
  const redisUsername = str("REDIS_USERNAME");
  if (redisUsername !== undefined && !/^[A-Za-z0-9_.@-]{1,128}$/.test(redisUsername)) {
    problems.push("REDIS_USERNAME must be 1-128 letters, digits, '_', '.', '@' or '-' (a Redis ACL user name, e.g. chat-gateway)");
  }
  if (redisUsername !== undefined && str("REDIS_PASSWORD") === undefined && !reported.has("REDIS_PASSWORD")) {
    problems.push("REDIS_USERNAME is set but REDIS_PASSWORD is not: an ACL user authenticates with its password");
  }

  const origins = (str("ALLOWED_ORIGINS") ?? "").split(",").map((o) => o.trim()).filter(Boolean);
  // Not `required()`: a value of only commas or blanks ("," or " , ") is set but names no origin.
  if (production && origins.length === 0) problems.push("ALLOWED_ORIGINS is required (in production: comma-separated exact origins)");
  for (const origin of origins) {
    let canonical: string | undefined;
    try {
      canonical = new URL(origin).origin;
    } catch {
      /* reported below */
    }
    // WHATWG URL accepts `https://*.example.com` as an origin, but no browser sends it: a wildcard would match nothing.
    if (canonical !== origin || origin.includes("*")) problems.push(`ALLOWED_ORIGINS entry "${origin}" is not an exact origin like https://chat.example.com`);
  }

  const logLevel = str("LOG_LEVEL") ?? "info";
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}`);

  const serviceId = str("SERVICE_ID") ?? "chat-gateway";
  if (!/^[a-z][a-z0-9-]{0,39}$/.test(serviceId)) {
    problems.push("SERVICE_ID must be lower-case letters, digits and dashes (it prefixes the secret ids)");
  }

  const config: Config = {
    port: int("PORT"),
    host: str("HOST") ?? "0.0.0.0",
    production,
    secretsSource: secretsSource === "gcp" ? "gcp" : "env",
    gcpProject,
    jwt: {
      secretKey: jwtSecretKey,
      previousSecretKey: secret("JWT_SECRET_KEY_PREVIOUS", str("JWT_SECRET_KEY_PREVIOUS")),
      jwksUrl,
      issuer: str("JWT_ISSUER"),
      audience: str("JWT_AUDIENCE"),
    },
    serviceId,
    serviceSecret: serviceSecret ?? "",
    previousServiceSecret: secret("SERVICE_SECRET_PREVIOUS", str("SERVICE_SECRET_PREVIOUS")),
    redis: {
      url: redisUrl,
      ...(redisCluster === undefined ? {} : { cluster: { nodes: redisCluster, tls: redisTls === "true" } }),
      username: redisUsername,
      password: str("REDIS_PASSWORD"),
      tlsCa: str("REDIS_TLS_CA"),
    },
    secretsPermissionWaitSeconds: int("SECRETS_PERMISSION_WAIT_SECONDS"),
    allowedOrigins: origins,
    ticketTtlSeconds: int("TICKET_TTL_SECONDS"),
    ticketRatePerUser: int("TICKET_RATE_PER_USER"),
    ticketRatePerIp: int("TICKET_RATE_PER_IP"),
    heartbeatIntervalMs: int("HEARTBEAT_INTERVAL_MS"),
    maxConnectionAgeSeconds: int("MAX_CONNECTION_AGE_SECONDS"),
    shutdownGraceMs: int("SHUTDOWN_GRACE_MS"),
    maxMessageBytes: int("MAX_MESSAGE_BYTES"),
    maxConnectionsPerUser: int("MAX_CONNECTIONS_PER_USER"),
    maxSendBufferBytes: int("MAX_SEND_BUFFER_BYTES"),
    maxFramesPerSecond: int("MAX_FRAMES_PER_SECOND"),
    historyMaxEvents: int("HISTORY_MAX_EVENTS"),
    historyTtlSeconds: int("HISTORY_TTL_SECONDS"),
    metricsPort: int("METRICS_PORT"),
    logLevel,
    agentWebhook: {
      ...agentWebhook(str("AGENT_WEBHOOK_URL"), str("AGENT_WEBHOOK_SECRET"), production, reported, problems),
      timeoutMs: int("AGENT_WEBHOOK_TIMEOUT_MS"),
      maxInFlight: int("AGENT_WEBHOOK_MAX_IN_FLIGHT"),
      maxInFlightPerUser: int("AGENT_WEBHOOK_MAX_IN_FLIGHT_PER_USER"),
      rememberedPerUser: int("MESSAGE_IDS_PER_USER"),
    },
    trustProxyHops: int("TRUST_PROXY_HOPS"),
    revocationKeepSeconds: int("REVOCATION_KEEP_SECONDS"),
  };
  if (config.redis.tlsCa !== undefined && !config.redis.tlsCa.includes("-----BEGIN CERTIFICATE-----")) {
    problems.push("REDIS_TLS_CA must be a PEM certificate");
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/**
 * AGENT_WEBHOOK_URL and AGENT_WEBHOOK_SECRET. The URL is optional; when set it
 * is https, or (outside production, or to a loopback address for an agent
 * running as a sidecar in the same instance) http; and the secret is then
 * required, in the Standard Webhooks form `whsec_<base64 of 24 to 64 bytes>`.
 * Problems name the setting, never its value: the URL may carry a token.
 */
function agentWebhook(
  url: string | undefined,
  secret: string | undefined,
  production: boolean,
  reported: ReadonlySet<string>,
  problems: string[],
): { url: string | undefined; secret: string | undefined } {
  if (url !== undefined) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      problems.push("AGENT_WEBHOOK_URL is not a URL (https://agent.example.com/webhook)");
    }
    if (parsed !== undefined) {
      const loopback = isLoopbackHost(parsed.hostname);
      if (parsed.protocol !== "https:" && parsed.protocol !== "http:") problems.push("AGENT_WEBHOOK_URL must be https:// (or http:// to a loopback address)");
      else if (parsed.protocol === "http:" && production && !loopback) {
        problems.push("AGENT_WEBHOOK_URL must be https:// in production; plain http:// is allowed only to a loopback address (a sidecar)");
      }
      if (parsed.username !== "" || parsed.password !== "") problems.push("AGENT_WEBHOOK_URL must not carry credentials; the hand-off is signed with AGENT_WEBHOOK_SECRET");
    }
    if (secret === undefined && !reported.has("AGENT_WEBHOOK_SECRET")) {
      problems.push("AGENT_WEBHOOK_SECRET is required when AGENT_WEBHOOK_URL is set (whsec_…, the key the agent backend verifies signatures with)");
    }
  }
  if (secret !== undefined && !isWebhookSecret(secret)) {
    problems.push("AGENT_WEBHOOK_SECRET must be whsec_ followed by the base64 of 24 to 64 random bytes");
  }
  return { url, secret };
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function isWebhookSecret(secret: string): boolean {
  const match = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret);
  if (!match) return false;
  const bytes = Buffer.from(match[1]!, "base64").length;
  return bytes >= 24 && bytes <= 64;
}

/**
 * REDIS_CLUSTER_NODES: comma-separated `host:port` (an IPv6 host in brackets,
 * `[::1]:6379`). Undefined when unset; problems are pushed, not thrown.
 */
function clusterNodes(raw: string | undefined, problems: string[]): Array<{ host: string; port: number }> | undefined {
  if (raw === undefined) return undefined;
  const entries = raw.split(",").map((e) => e.trim()).filter(Boolean);
  if (entries.length === 0) {
    problems.push("REDIS_CLUSTER_NODES names no node (comma-separated host:port, e.g. 10.0.0.3:6379)");
    return undefined;
  }
  const nodes: Array<{ host: string; port: number }> = [];
  for (const entry of entries) {
    const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(entry);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65535) {
      problems.push(`REDIS_CLUSTER_NODES entry "${entry}" is not host:port (e.g. 10.0.0.3:6379)`);
      continue;
    }
    nodes.push({ host: match[1]!.replace(/^\[|\]$/g, ""), port });
  }
  return nodes.length === entries.length ? nodes : undefined;
}

/** The settings table, for docs and tests: name → [default, min, max, unit]. */
export const INTEGER_SETTINGS = INTEGERS;
