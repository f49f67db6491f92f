import { describe, expect, it } from "vitest";
import { ConfigError, INTEGER_SETTINGS, parseConfig, type Env } from "../../service/src/config.js";

/**
 * docs/protocol.md §7 (and §8.4): every setting's default, what production
 * requires, and that a broken environment is reported in one ConfigError
 * naming every problem at once.
 */

const JWT_KEY = "config-test-jwt-key-0123456789abcdef0123";
const SERVICE_SECRET = "config-test-service-secret-0123456789abcd";
/** The least a non-production environment needs. */
const MINIMAL: Env = { JWT_SECRET_KEY: JWT_KEY, SERVICE_SECRET };
/** A complete production environment. */
const PRODUCTION: Env = {
  ...MINIMAL,
  NODE_ENV: "production",
  REDIS_URL: "rediss://10.0.0.3:6378",
  ALLOWED_ORIGINS: "https://chat.example.com",
};

/** The ConfigError that parseConfig throws for `env`; fails the test if it does not throw one. */
function problemsOf(env: Env): { error: ConfigError; problems: readonly string[] } {
  try {
    parseConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const error = err as ConfigError;
    return { error, problems: error.problems };
  }
  throw new Error(`parseConfig accepted ${JSON.stringify(env)}`);
}

/** The one problem that names `name`. */
function problemNaming(problems: readonly string[], name: string): string {
  const matching = problems.filter((p) => p.includes(name));
  expect(matching, `problems naming ${name}: ${JSON.stringify(problems)}`).toHaveLength(1);
  return matching[0] as string;
}

describe("defaults", () => {
  it("every §7 setting has its documented default when unset", () => {
    const config = parseConfig(MINIMAL);
    expect(config.port).toBe(8080);
    expect(config.host).toBe("0.0.0.0");
    expect(config.production).toBe(false);
    expect(config.secretsSource).toBe("env");
    expect(config.jwt).toEqual({ secretKey: JWT_KEY, previousSecretKey: undefined, jwksUrl: undefined, issuer: undefined, audience: undefined });
    expect(config.serviceId).toBe("chat-gateway");
    expect(config.serviceSecret).toBe(SERVICE_SECRET);
    expect(config.redis).toEqual({ url: undefined, password: undefined, tlsCa: undefined });
    expect(config.allowedOrigins).toEqual([]);
    expect(config.ticketTtlSeconds).toBe(30);
    expect(config.ticketRatePerUser).toBe(30);
    expect(config.ticketRatePerIp).toBe(600);
    expect(config.heartbeatIntervalMs).toBe(25_000);
    expect(config.maxConnectionAgeSeconds).toBe(3300);
    expect(config.shutdownGraceMs).toBe(8000);
    expect(config.maxMessageBytes).toBe(65_536);
    expect(config.maxConnectionsPerUser).toBe(20);
    expect(config.historyMaxEvents).toBe(1000);
    expect(config.historyTtlSeconds).toBe(900);
    expect(config.metricsPort).toBe(9464);
  });

  it("every §8.4 setting has its documented default when unset", () => {
    const config = parseConfig(MINIMAL);
    expect(config.gcpProject).toBeUndefined();
    expect(config.maxSendBufferBytes).toBe(1_048_576);
    expect(config.maxFramesPerSecond).toBe(50);
    expect(config.trustProxyHops).toBe(0);
    expect(config.logLevel).toBe("info");
    expect(config.agentWebhook).toEqual({
      url: undefined,
      secret: undefined,
      timeoutMs: 5000,
      maxInFlight: 500,
      maxInFlightPerUser: 8,
      rememberedPerUser: 1000,
    });
  });

  it("the exported integer table carries the same defaults as the parsed config", () => {
    const config = parseConfig(MINIMAL);
    const byName: Record<keyof typeof INTEGER_SETTINGS, number> = {
      PORT: config.port,
      TICKET_TTL_SECONDS: config.ticketTtlSeconds,
      TICKET_RATE_PER_USER: config.ticketRatePerUser,
      TICKET_RATE_PER_IP: config.ticketRatePerIp,
      HEARTBEAT_INTERVAL_MS: config.heartbeatIntervalMs,
      MAX_CONNECTION_AGE_SECONDS: config.maxConnectionAgeSeconds,
      SHUTDOWN_GRACE_MS: config.shutdownGraceMs,
      MAX_MESSAGE_BYTES: config.maxMessageBytes,
      MAX_CONNECTIONS_PER_USER: config.maxConnectionsPerUser,
      MAX_SEND_BUFFER_BYTES: config.maxSendBufferBytes,
      MAX_FRAMES_PER_SECOND: config.maxFramesPerSecond,
      HISTORY_MAX_EVENTS: config.historyMaxEvents,
      HISTORY_TTL_SECONDS: config.historyTtlSeconds,
      METRICS_PORT: config.metricsPort,
      AGENT_WEBHOOK_TIMEOUT_MS: config.agentWebhook.timeoutMs,
      AGENT_WEBHOOK_MAX_IN_FLIGHT: config.agentWebhook.maxInFlight,
      AGENT_WEBHOOK_MAX_IN_FLIGHT_PER_USER: config.agentWebhook.maxInFlightPerUser,
      MESSAGE_IDS_PER_USER: config.agentWebhook.rememberedPerUser,
      TRUST_PROXY_HOPS: config.trustProxyHops,
      SECRETS_PERMISSION_WAIT_SECONDS: config.secretsPermissionWaitSeconds,
      REVOCATION_KEEP_SECONDS: config.revocationKeepSeconds,
    };
    for (const [name, { default: def }] of Object.entries(INTEGER_SETTINGS)) {
      expect(byName[name as keyof typeof INTEGER_SETTINGS], name).toBe(def);
    }
  });

  it("every setting given is read, trimmed", () => {
    const config = parseConfig({
      ...MINIMAL,
      PORT: " 9000 ",
      HOST: "127.0.0.1",
      JWT_SECRET_KEY_PREVIOUS: `${JWT_KEY}-previous`,
      JWT_ISSUER: "https://auth.example.com",
      JWT_AUDIENCE: "chat",
      SERVICE_ID: "chat-gw-eu",
      REDIS_URL: "redis://localhost:6380/2",
      REDIS_PASSWORD: "redis-auth-string",
      ALLOWED_ORIGINS: " https://a.example.com , http://localhost:5173 ",
      TICKET_TTL_SECONDS: "10",
      TICKET_RATE_PER_USER: "5",
      TICKET_RATE_PER_IP: "50",
      HEARTBEAT_INTERVAL_MS: "1000",
      MAX_CONNECTION_AGE_SECONDS: "600",
      SHUTDOWN_GRACE_MS: "2000",
      MAX_MESSAGE_BYTES: "1024",
      MAX_CONNECTIONS_PER_USER: "3",
      HISTORY_MAX_EVENTS: "10",
      HISTORY_TTL_SECONDS: "60",
      METRICS_PORT: "0",
      LOG_LEVEL: "debug",
      TRUST_PROXY_HOPS: "2",
    });
    expect(config).toMatchObject({
      port: 9000,
      host: "127.0.0.1",
      jwt: { previousSecretKey: `${JWT_KEY}-previous`, issuer: "https://auth.example.com", audience: "chat" },
      serviceId: "chat-gw-eu",
      redis: { url: "redis://localhost:6380/2", password: "redis-auth-string" },
      allowedOrigins: ["https://a.example.com", "http://localhost:5173"],
      ticketTtlSeconds: 10,
      ticketRatePerUser: 5,
      ticketRatePerIp: 50,
      heartbeatIntervalMs: 1000,
      maxConnectionAgeSeconds: 600,
      shutdownGraceMs: 2000,
      maxMessageBytes: 1024,
      maxConnectionsPerUser: 3,
      historyMaxEvents: 10,
      historyTtlSeconds: 60,
      metricsPort: 0,
      logLevel: "debug",
      trustProxyHops: 2,
    });
  });

  it("GCP_PROJECT falls back to GOOGLE_CLOUD_PROJECT", () => {
    expect(parseConfig({ ...MINIMAL, GOOGLE_CLOUD_PROJECT: "from-metadata" }).gcpProject).toBe("from-metadata");
    expect(parseConfig({ ...MINIMAL, GOOGLE_CLOUD_PROJECT: "from-metadata", GCP_PROJECT: "explicit" }).gcpProject).toBe("explicit");
  });
});

describe("production", () => {
  it("a complete production environment is accepted", () => {
    const config = parseConfig(PRODUCTION);
    expect(config.production).toBe(true);
    expect(config.redis.url).toBe("rediss://10.0.0.3:6378");
    expect(config.allowedOrigins).toEqual(["https://chat.example.com"]);
  });

  it("production requires REDIS_URL, ALLOWED_ORIGINS, JWT_SECRET_KEY and SERVICE_SECRET, all reported in one ConfigError", () => {
    const { error, problems } = problemsOf({ NODE_ENV: "production" });
    expect(problems).toHaveLength(4);
    for (const name of ["REDIS_URL", "ALLOWED_ORIGINS", "JWT_SECRET_KEY", "SERVICE_SECRET"]) {
      expect(problemNaming(problems, name)).toMatch(/is required/);
      expect(error.message).toContain(name);
    }
    expect(error.name).toBe("ConfigError");
    expect(error.message).toMatch(/^Invalid configuration \(4 problems\)/);
  });

  it.each(["REDIS_URL", "ALLOWED_ORIGINS", "JWT_SECRET_KEY", "SERVICE_SECRET"])("production without %s names exactly that setting", (name) => {
    const { problems } = problemsOf({ ...PRODUCTION, [name]: undefined });
    expect(problems).toHaveLength(1);
    expect(problemNaming(problems, name)).toMatch(/is required/);
  });

  it("an empty or blank value counts as missing, and ALLOWED_ORIGINS of only commas names no origin", () => {
    const { problems } = problemsOf({ ...PRODUCTION, REDIS_URL: "", ALLOWED_ORIGINS: " , ", SERVICE_SECRET: "   " });
    expect(problems).toHaveLength(3);
    problemNaming(problems, "REDIS_URL");
    problemNaming(problems, "ALLOWED_ORIGINS");
    problemNaming(problems, "SERVICE_SECRET");
  });

  it("NODE_ENV other than production does not make REDIS_URL or ALLOWED_ORIGINS required", () => {
    for (const nodeEnv of [undefined, "development", "test", "staging"]) {
      const config = parseConfig({ ...MINIMAL, NODE_ENV: nodeEnv });
      expect(config.production).toBe(false);
      expect(config.redis.url).toBeUndefined();
      expect(config.allowedOrigins).toEqual([]);
    }
  });

  it("JWT_SECRET_KEY and SERVICE_SECRET are required outside production too", () => {
    const { problems } = problemsOf({});
    expect(problems).toHaveLength(2);
    problemNaming(problems, "JWT_SECRET_KEY");
    problemNaming(problems, "SERVICE_SECRET");
  });
});

describe("malformed settings", () => {
  it.each([
    ["PORT", "abc"],
    ["PORT", "80.5"],
    ["PORT", "1e3"],
    ["PORT", "0x50"],
    ["PORT", "8080abc"],
    ["TICKET_TTL_SECONDS", "thirty"],
    ["HEARTBEAT_INTERVAL_MS", "25s"],
    ["METRICS_PORT", "99999999999999999999"],
  ])("a malformed integer %s=%s is named with its range", (name, value) => {
    const { problems } = problemsOf({ ...MINIMAL, [name]: value });
    expect(problems).toHaveLength(1);
    const problem = problemNaming(problems, name);
    expect(problem).toMatch(/must be an integer from -?\d+ to \d+/);
    expect(problem).toContain(`"${value}"`);
  });

  it.each([
    ["PORT", "-1"],
    ["PORT", "65536"],
    ["TICKET_TTL_SECONDS", "0"],
    ["TICKET_TTL_SECONDS", "301"],
    ["TICKET_RATE_PER_USER", "0"],
    ["TICKET_RATE_PER_IP", "0"],
    ["HEARTBEAT_INTERVAL_MS", "10"],
    // Cloud Run cuts every request at 3600 s at most.
    ["MAX_CONNECTION_AGE_SECONDS", "3600"],
    // Cloud Run kills the instance 10 s after SIGTERM.
    ["SHUTDOWN_GRACE_MS", "10000"],
    ["MAX_MESSAGE_BYTES", "100"],
    ["MAX_CONNECTIONS_PER_USER", "0"],
    ["HISTORY_MAX_EVENTS", "0"],
    ["HISTORY_TTL_SECONDS", "0"],
    ["METRICS_PORT", "70000"],
    ["TRUST_PROXY_HOPS", "11"],
  ])("an out-of-range integer %s=%s is named", (name, value) => {
    const { problems } = problemsOf({ ...MINIMAL, [name]: value });
    expect(problems).toHaveLength(1);
    expect(problemNaming(problems, name)).toContain(`"${value}"`);
  });

  it("the limits of every integer range are accepted", () => {
    for (const [name, { min, max }] of Object.entries(INTEGER_SETTINGS)) {
      expect(() => parseConfig({ ...MINIMAL, [name]: String(min) }), `${name}=${min}`).not.toThrow();
      expect(() => parseConfig({ ...MINIMAL, [name]: String(max) }), `${name}=${max}`).not.toThrow();
    }
  });

  it.each([
    "https://chat.example.com/",
    "https://chat.example.com/app",
    "chat.example.com",
    "*",
    "https://*.example.com",
    "https://CHAT.example.com",
    "https://chat.example.com:443",
  ])("an ALLOWED_ORIGINS entry that is not an exact origin (%s) is named", (origin) => {
    const { problems } = problemsOf({ ...MINIMAL, ALLOWED_ORIGINS: `https://ok.example.com,${origin}` });
    expect(problems).toHaveLength(1);
    expect(problemNaming(problems, "ALLOWED_ORIGINS")).toContain(`"${origin}"`);
  });

  it("exact origins, with ports and plain http, are accepted", () => {
    const config = parseConfig({ ...MINIMAL, ALLOWED_ORIGINS: "https://chat.example.com,http://localhost:5173,https://chat.example.com:8443" });
    expect(config.allowedOrigins).toEqual(["https://chat.example.com", "http://localhost:5173", "https://chat.example.com:8443"]);
  });

  it.each(["JWT_SECRET_KEY", "JWT_SECRET_KEY_PREVIOUS", "SERVICE_SECRET"])("a %s shorter than 32 bytes is named, and its value is never echoed", (name) => {
    const short = "short-secret-value-31-bytes-xxx";
    expect(Buffer.byteLength(short)).toBe(31);
    const { error, problems } = problemsOf({ ...MINIMAL, [name]: short });
    expect(problems).toHaveLength(1);
    expect(problemNaming(problems, name)).toMatch(/at least 32 bytes/);
    expect(error.message).not.toContain(short);
    expect(error.stack ?? "").not.toContain(short);
  });

  it("a secret of exactly 32 bytes is accepted", () => {
    const key = "k".repeat(32);
    expect(parseConfig({ JWT_SECRET_KEY: key, SERVICE_SECRET: key, JWT_SECRET_KEY_PREVIOUS: key }).jwt.secretKey).toBe(key);
  });

  it.each(["http://redis.internal:6379", "redis-cluster://10.0.0.3", "localhost:6379", "10.0.0.3:6379", "not a url"])(
    "a REDIS_URL with another scheme (%s) is named",
    (url) => {
      const { problems } = problemsOf({ ...MINIMAL, REDIS_URL: url });
      expect(problems).toHaveLength(1);
      expect(problemNaming(problems, "REDIS_URL")).toMatch(/redis:\/\/ or rediss:\/\//);
    },
  );

  it("a malformed REDIS_URL is named without echoing the password it carries", () => {
    const { error } = problemsOf({ ...PRODUCTION, REDIS_URL: "http://default:hunter2-redis-password@10.0.0.3:6379" });
    expect(error.problems).toHaveLength(1);
    expect(error.message).not.toContain("hunter2-redis-password");
  });

  it("redis:// and rediss:// URLs are accepted", () => {
    expect(parseConfig({ ...MINIMAL, REDIS_URL: "redis://127.0.0.1:6379" }).redis.url).toBe("redis://127.0.0.1:6379");
    expect(parseConfig({ ...MINIMAL, REDIS_URL: "rediss://10.0.0.3:6378/0" }).redis.url).toBe("rediss://10.0.0.3:6378/0");
  });

  it("SECRETS_SOURCE, LOG_LEVEL, SERVICE_ID and REDIS_TLS_CA are checked", () => {
    const { problems } = problemsOf({ ...MINIMAL, SECRETS_SOURCE: "vault", LOG_LEVEL: "verbose", SERVICE_ID: "Chat_Gateway", REDIS_TLS_CA: "not a pem" });
    expect(problems).toHaveLength(4);
    problemNaming(problems, "SECRETS_SOURCE");
    problemNaming(problems, "LOG_LEVEL");
    problemNaming(problems, "SERVICE_ID");
    problemNaming(problems, "REDIS_TLS_CA");
  });

  it("SECRETS_SOURCE=gcp requires a project", () => {
    const { problems } = problemsOf({ ...MINIMAL, SECRETS_SOURCE: "gcp" });
    expect(problems).toHaveLength(1);
    problemNaming(problems, "GCP_PROJECT");
    expect(parseConfig({ ...MINIMAL, SECRETS_SOURCE: "gcp", GCP_PROJECT: "my-project" })).toMatchObject({ secretsSource: "gcp", gcpProject: "my-project" });
  });

  it("every problem of a broken environment is reported in one ConfigError", () => {
    const { error, problems } = problemsOf({
      NODE_ENV: "production",
      PORT: "http",
      TICKET_TTL_SECONDS: "0",
      ALLOWED_ORIGINS: "https://chat.example.com/",
      JWT_SECRET_KEY: "too-short",
      REDIS_URL: "http://redis:6379",
      LOG_LEVEL: "loud",
    });
    // SERVICE_SECRET missing, PORT, TTL, origin, short key, Redis scheme, log level.
    expect(problems).toHaveLength(7);
    for (const name of ["SERVICE_SECRET", "PORT", "TICKET_TTL_SECONDS", "ALLOWED_ORIGINS", "JWT_SECRET_KEY", "REDIS_URL", "LOG_LEVEL"]) {
      problemNaming(problems, name);
    }
    expect(error.message).toMatch(/^Invalid configuration \(7 problems\)/);
    expect(error.message).not.toContain("too-short");
  });
});

describe("outside production", () => {
  it("a missing REDIS_URL is fine: the embedded store is used", () => {
    expect(parseConfig(MINIMAL).redis.url).toBeUndefined();
  });

  it("a missing ALLOWED_ORIGINS is fine", () => {
    expect(parseConfig(MINIMAL).allowedOrigins).toEqual([]);
  });
});

describe("AUTH_JWKS_URL", () => {
  it("makes JWT_SECRET_KEY optional", () => {
    const config = parseConfig({ SERVICE_SECRET, AUTH_JWKS_URL: "https://auth.example.com/.well-known/jwks.json" });
    expect(config.jwt.secretKey).toBeUndefined();
    expect(config.jwt.jwksUrl).toBe("https://auth.example.com/.well-known/jwks.json");
  });

  it("makes JWT_SECRET_KEY optional in production too", () => {
    const config = parseConfig({ ...PRODUCTION, JWT_SECRET_KEY: undefined, AUTH_JWKS_URL: "https://auth.example.com/jwks" });
    expect(config.jwt.secretKey).toBeUndefined();
  });

  it("still checks a JWT_SECRET_KEY that is given alongside it", () => {
    const { problems } = problemsOf({ SERVICE_SECRET, AUTH_JWKS_URL: "https://auth.example.com/jwks", JWT_SECRET_KEY: "short" });
    expect(problems).toHaveLength(1);
    problemNaming(problems, "JWT_SECRET_KEY");
  });

  it("must be an http(s) URL", () => {
    const { problems } = problemsOf({ SERVICE_SECRET, AUTH_JWKS_URL: "ftp://auth.example.com/jwks" });
    expect(problems).toHaveLength(1);
    expect(problemNaming(problems, "AUTH_JWKS_URL")).toMatch(/https:\/\/ or http:\/\//);
  });

  it("must be https in production: keys over plain http could be swapped on the way", () => {
    const { problems } = problemsOf({ ...PRODUCTION, JWT_SECRET_KEY: undefined, AUTH_JWKS_URL: "http://auth.example.com/jwks" });
    expect(problemNaming(problems, "AUTH_JWKS_URL")).toMatch(/scheme https:\/\/$/);
  });
});

describe("REDIS_USERNAME (a Redis ACL user, e.g. Memorystore for Redis Cluster's ACL policy)", () => {
  const REDIS = { ...MINIMAL, REDIS_CLUSTER_NODES: "10.0.0.3:6379", REDIS_TLS: "true" };

  it("is carried with the password, and unset means the default user", () => {
    expect(parseConfig({ ...REDIS, REDIS_USERNAME: "chat-gateway", REDIS_PASSWORD: "pw" }).redis).toMatchObject({ username: "chat-gateway", password: "pw" });
    expect(parseConfig({ ...REDIS, REDIS_PASSWORD: "pw" }).redis.username).toBeUndefined();
  });

  it("without REDIS_PASSWORD is a problem: an ACL user authenticates with its password", () => {
    const { problems } = problemsOf({ ...REDIS, REDIS_USERNAME: "chat-gateway" });
    expect(problems).toHaveLength(1);
    expect(problemNaming(problems, "REDIS_USERNAME")).toContain("REDIS_PASSWORD");
  });

  it("with a space or a control character is a problem (it would split the AUTH command)", () => {
    for (const bad of ["chat gateway", "gw\r\nFLUSHALL", "x".repeat(129)]) {
      const { problems } = problemsOf({ ...REDIS, REDIS_USERNAME: bad, REDIS_PASSWORD: "pw" });
      expect(problems, bad).toHaveLength(1);
      problemNaming(problems, "REDIS_USERNAME");
      expect(problems[0]).not.toContain("FLUSHALL");
    }
  });
});

describe("the agent webhook (AGENT_WEBHOOK_URL, AGENT_WEBHOOK_SECRET)", () => {
  const SECRET = `whsec_${Buffer.alloc(32, 1).toString("base64")}`;

  it("is optional: without it chat is unavailable, and nothing else is required", () => {
    expect(parseConfig(PRODUCTION).agentWebhook.url).toBeUndefined();
  });

  it("takes https anywhere, and http to a loopback address (a sidecar) even in production", () => {
    for (const url of ["https://agent.example.com/webhook", "http://127.0.0.1:8090/webhook", "http://localhost:8090/hook", "http://[::1]:8090/hook"]) {
      expect(parseConfig({ ...PRODUCTION, AGENT_WEBHOOK_URL: url, AGENT_WEBHOOK_SECRET: SECRET }).agentWebhook).toMatchObject({ url, secret: SECRET });
    }
  });

  it("refuses plain http to anything but loopback in production, without echoing the URL (it may carry a token)", () => {
    const { problems } = problemsOf({ ...PRODUCTION, AGENT_WEBHOOK_URL: "http://agent.internal/hook?token=tok-123", AGENT_WEBHOOK_SECRET: SECRET });
    expect(problems).toHaveLength(1);
    expect(problemNaming(problems, "AGENT_WEBHOOK_URL")).toMatch(/https:\/\/ in production/);
    expect(problems.join()).not.toContain("tok-123");
    // Outside production a plain-http agent on another host is fine (a local try-out).
    expect(parseConfig({ ...MINIMAL, AGENT_WEBHOOK_URL: "http://agent.internal/hook", AGENT_WEBHOOK_SECRET: SECRET }).agentWebhook.url).toBe("http://agent.internal/hook");
  });

  it("refuses what is not an http(s) URL, and credentials in it", () => {
    for (const url of ["not a url", "ftp://agent.example.com/hook", "https://user:pw@agent.example.com/hook"]) {
      const { problems } = problemsOf({ ...MINIMAL, AGENT_WEBHOOK_URL: url, AGENT_WEBHOOK_SECRET: SECRET });
      expect(problems, url).toHaveLength(1);
      expect(problemNaming(problems, "AGENT_WEBHOOK_URL")).not.toContain("pw@");
    }
  });

  it("requires AGENT_WEBHOOK_SECRET when the URL is set, in the whsec_ form, reported with every other problem at once", () => {
    const missing = problemsOf({ ...PRODUCTION, SERVICE_SECRET: undefined, AGENT_WEBHOOK_URL: "https://agent.example.com/hook" });
    expect(missing.problems).toHaveLength(2);
    problemNaming(missing.problems, "AGENT_WEBHOOK_SECRET");
    problemNaming(missing.problems, "SERVICE_SECRET");
    for (const bad of ["secret", "whsec_", "whsec_!!!!", `whsec_${Buffer.alloc(8).toString("base64")}`]) {
      const { problems } = problemsOf({ ...MINIMAL, AGENT_WEBHOOK_URL: "https://agent.example.com/hook", AGENT_WEBHOOK_SECRET: bad });
      expect(problemNaming(problems, "AGENT_WEBHOOK_SECRET"), bad).toMatch(/whsec_/);
      expect(problems.join()).not.toContain(bad.slice(6) || "\u0000");
    }
  });

  it("range-checks the timeout and the in-flight bounds", () => {
    const { problems } = problemsOf({ ...MINIMAL, AGENT_WEBHOOK_TIMEOUT_MS: "0", AGENT_WEBHOOK_MAX_IN_FLIGHT_PER_USER: "x" });
    expect(problems).toHaveLength(2);
    problemNaming(problems, "AGENT_WEBHOOK_TIMEOUT_MS");
    problemNaming(problems, "AGENT_WEBHOOK_MAX_IN_FLIGHT_PER_USER");
  });
});
