/**
 * The gateway's configuration, parsed from the environment. Each setting is
 * declared once, with its default, range and unit, in ./settings.ts (which the
 * Pulumi program imports too); docs/protocol.md §7 is the contract. Like `ws`, which spreads
 * its defaults and rejects bad options with one clear error, `parseConfig`
 * reads an environment, applies the defaults and reports *every* problem at
 * once, so a broken deploy is fixed in one round instead of five.
 *
 * Nothing here does I/O: secrets are fetched by ./secrets.ts and handed in as
 * part of the environment.
 */

import { agentWebhook, allowedOrigins, redisSettings, type RedisConfig } from "./configRules.js";
import {
  CHOICE_SETTINGS,
  choiceProblem,
  INTEGER_SETTINGS,
  integerProblem,
  MIN_SECRET_BYTES,
  TEXT_SETTINGS,
  type ChoiceSetting,
  type ChoiceSettingName,
  type IntegerSettingName,
  type SettingName,
  type TextSetting,
  type TextSettingName,
} from "./settings.js";

/** The settings table (./settings.ts), for docs and tests. */
export { INTEGER_SETTINGS };

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
  readonly redis: RedisConfig;
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

/** One helper per kind of setting, each reading the declaration in ./settings.ts and pushing what is wrong. */
function settingReaders(env: Env, problems: string[], reported: ReadonlySet<string>) {
  const str = (name: SettingName): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === "" ? undefined : v;
  };
  const int = (name: IntegerSettingName): number => {
    const spec = INTEGER_SETTINGS[name];
    const raw = str(name);
    const problem = raw === undefined ? undefined : integerProblem(name, raw, spec);
    if (problem !== undefined) problems.push(problem);
    return raw === undefined || problem !== undefined ? spec.default : Number(raw);
  };
  const choice = (name: ChoiceSettingName): string | undefined => {
    const spec: ChoiceSetting = CHOICE_SETTINGS[name];
    const raw = str(name);
    const problem = raw === undefined ? undefined : choiceProblem(name, raw, spec.allowed);
    if (problem !== undefined) problems.push(problem);
    return raw ?? spec.default;
  };
  const text = (name: TextSettingName): string | undefined => {
    const spec: TextSetting = TEXT_SETTINGS[name];
    return str(name) ?? spec.default;
  };
  /** A setting that must be present; not reported again when a secret read already named it. */
  const required = (name: SettingName, why: string): string | undefined => {
    const v = str(name);
    if (v === undefined && !reported.has(name)) problems.push(`${name} is required (${why})`);
    return v;
  };
  /** Checks a secret's length; the problem never carries the value. */
  const secret = (name: SettingName, value: string | undefined): string | undefined => {
    if (value !== undefined && Buffer.byteLength(value) < MIN_SECRET_BYTES) {
      problems.push(`${name} must be at least ${MIN_SECRET_BYTES} bytes long`);
    }
    return value;
  };
  const url = (name: SettingName, protocols: readonly string[]): string | undefined => {
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
  return { str, int, choice, text, required, secret, url };
}

export function parseConfig(env: Env, options: { alreadyReported?: ReadonlySet<string> } = {}): Config {
  const problems: string[] = [];
  const reported = options.alreadyReported ?? new Set<string>();
  const readers = settingReaders(env, problems, reported);
  const { str, int, choice, text, secret, url } = readers;

  const production = str("NODE_ENV") === "production";
  const { secretsSource, gcpProject, jwksUrl, jwtSecretKey, serviceSecret } = authSettings(readers, production, problems);

  const origins = allowedOrigins(text("ALLOWED_ORIGINS"), production, problems);

  const logLevel = choice("LOG_LEVEL")!;
  const serviceId = checkedServiceId(text("SERVICE_ID")!, problems);

  const config: Config = {
    port: int("PORT"),
    host: text("HOST")!,
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
    redis: redisSettings({ str, choice, url, production, reported, problems }),
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
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** Where secrets come from, and how user tokens and internal API calls are authenticated. */
function authSettings(readers: ReturnType<typeof settingReaders>, production: boolean, problems: string[]) {
  const { str, choice, required, secret, url } = readers;
  const secretsSource = choice("SECRETS_SOURCE");
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

  return { secretsSource, gcpProject, jwksUrl, jwtSecretKey, serviceSecret };
}

function checkedServiceId(serviceId: string, problems: string[]): string {
  if (!/^[a-z][a-z0-9-]{0,39}$/.test(serviceId)) {
    problems.push("SERVICE_ID must be lower-case letters, digits and dashes (it prefixes the secret ids)");
  }
  return serviceId;
}
