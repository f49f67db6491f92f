import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ConfigError, type Env } from "../../service/src/config.js";
import { SECRETS, secretVersionName } from "../../service/src/secretNames.js";
import { createGcpSecretClient, type SecretClient } from "../../service/src/secrets.js";
import { loadConfig } from "../../service/src/server.js";

/**
 * SECRETS_SOURCE=gcp (docs/protocol.md §7, §8.4): the REAL Secret Manager
 * client (@google-cloud/secret-manager over google-gax and @grpc/grpc-js)
 * talks to a local fake SecretManagerService that serves AccessSecretVersion
 * from the package's own service.proto. Only the Google API is faked; the
 * client, its gRPC transport and the loading code are the production ones.
 *
 * The client is given insecure channel credentials (no TLS, no Google auth
 * on the channel) and an explicit universe domain: without the latter,
 * google-gax asks google-auth-library for the universe domain, which probes
 * the GCE metadata server at 169.254.169.254 before the first call.
 */

const PROJECT = "test-project";
const PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUfakeCAforTestsOnly0123456789wCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";
const VALUES = {
  JWT_SECRET_KEY: "gcp-jwt-secret-key-0123456789abcdef0123456789",
  JWT_SECRET_KEY_PREVIOUS: "gcp-jwt-secret-key-previous-0123456789abcdef",
  SERVICE_SECRET: "gcp-service-secret-0123456789abcdef0123456789",
  SERVICE_SECRET_PREVIOUS: "gcp-service-secret-previous-0123456789abcdef",
  REDIS_PASSWORD: "gcp-redis-auth-string-0123456789abcdef",
  REDIS_TLS_CA: PEM,
} as const;
type SecretEnv = keyof typeof VALUES | "AGENT_WEBHOOK_SECRET";
const WEBHOOK_KEY = `whsec_${Buffer.alloc(32, 3).toString("base64")}`;

/** What the fake answers for one secret version: a payload, a gRPC status, or nothing ever. */
type Answer = { value: string } | { code: grpc.status } | { hang: true };

const require = createRequire(import.meta.url);
/** google/cloud/secretmanager/v1/*.proto, as shipped with the client. */
const PROTOS = join(dirname(require.resolve("@google-cloud/secret-manager/package.json")), "build", "protos");
/** google/api/*.proto and google/iam/v1/*.proto, which service.proto imports: google-gax ships them (build/src/index.js → build/protos). */
const GAX_PROTOS = join(dirname(require.resolve("google-gax")), "..", "protos");

let server: grpc.Server;
let port: number;
const answers = new Map<string, Answer>();
const requested: string[] = [];
const hung: Array<() => void> = [];

function nameOf(env: SecretEnv, serviceId = "chat-gateway", project = PROJECT): string {
  const spec = SECRETS.find((s) => s.env === env);
  if (!spec) throw new Error(`no secret for ${env}`);
  return secretVersionName(project, serviceId, spec);
}

/** Every secret present, with the values above; `overrides` replaces the answer for some. */
function serve(overrides: Partial<Record<SecretEnv, Answer>> = {}, serviceId = "chat-gateway"): void {
  answers.clear();
  for (const env of Object.keys(VALUES) as Array<keyof typeof VALUES>) {
    answers.set(nameOf(env, serviceId), overrides[env] ?? { value: VALUES[env] });
  }
  // The agent webhook's key exists only where a webhook is configured (see its tests).
  if (overrides.AGENT_WEBHOOK_SECRET) answers.set(nameOf("AGENT_WEBHOOK_SECRET", serviceId), overrides.AGENT_WEBHOOK_SECRET);
}

const connect = (p = port) => (): Promise<SecretClient> =>
  createGcpSecretClient({
    apiEndpoint: "127.0.0.1",
    port: p,
    sslCreds: grpc.credentials.createInsecure(),
    universeDomain: "googleapis.com",
  });

const BASE_ENV: Env = {
  NODE_ENV: "production",
  SECRETS_SOURCE: "gcp",
  GCP_PROJECT: PROJECT,
  REDIS_URL: "rediss://10.0.0.3:6378",
  ALLOWED_ORIGINS: "https://chat.example.test",
};

async function configError(promise: Promise<unknown>): Promise<ConfigError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("loadConfig accepted the configuration");
}

beforeAll(async () => {
  const definition = protoLoader.loadSync("google/cloud/secretmanager/v1/service.proto", {
    includeDirs: [PROTOS, GAX_PROTOS],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const v1 = (grpc.loadPackageDefinition(definition) as unknown as {
    google: { cloud: { secretmanager: { v1: { SecretManagerService: { service: grpc.ServiceDefinition } } } } };
  }).google.cloud.secretmanager.v1;
  server = new grpc.Server();
  server.addService(v1.SecretManagerService.service, {
    accessSecretVersion(call: grpc.ServerUnaryCall<{ name: string }, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const name = call.request.name;
      requested.push(name);
      const answer = answers.get(name) ?? { code: grpc.status.NOT_FOUND };
      if ("hang" in answer) {
        hung.push(() => callback({ code: grpc.status.CANCELLED, details: "test over" }));
        return;
      }
      if ("code" in answer) {
        callback({ code: answer.code, details: `fake: ${grpc.status[answer.code]} for ${name}` });
        return;
      }
      callback(null, { name: name.replace(/latest$/, "7"), payload: { data: Buffer.from(answer.value, "utf8") } });
    },
  });
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound))),
  );
});

afterAll(() => {
  for (const release of hung.splice(0)) release();
  server?.forceShutdown();
});

beforeEach(() => {
  requested.length = 0;
  serve();
});

describe("all secrets deployed", () => {
  it("the real client reads every secret and the config carries their values", async () => {
    const config = await loadConfig(BASE_ENV, connect());
    expect(config.secretsSource).toBe("gcp");
    expect(config.jwt.secretKey).toBe(VALUES.JWT_SECRET_KEY);
    expect(config.jwt.previousSecretKey).toBe(VALUES.JWT_SECRET_KEY_PREVIOUS);
    expect(config.serviceSecret).toBe(VALUES.SERVICE_SECRET);
    expect(config.previousServiceSecret).toBe(VALUES.SERVICE_SECRET_PREVIOUS);
    expect(config.redis.password).toBe(VALUES.REDIS_PASSWORD);
    // Settings are trimmed; a PEM without its final newline is still a PEM.
    expect(config.redis.tlsCa).toBe(PEM.trim());
  });

  it("the names requested are exactly the versions/latest of every SECRETS entry, each once", async () => {
    await loadConfig(BASE_ENV, connect());
    const expected = SECRETS.map((spec) => `projects/${PROJECT}/secrets/chat-gateway-${spec.id}/versions/latest`);
    expect([...requested].sort()).toEqual([...expected].sort());
    expect(expected).toHaveLength(SECRETS.length);
  });

  it("the secret ids carry SERVICE_ID as their prefix", async () => {
    serve({}, "chat-gw-eu");
    const config = await loadConfig({ ...BASE_ENV, SERVICE_ID: "chat-gw-eu" }, connect());
    expect(config.serviceSecret).toBe(VALUES.SERVICE_SECRET);
    expect(requested).toContain(`projects/${PROJECT}/secrets/chat-gw-eu-service-secret/versions/latest`);
    expect(requested.every((name) => name.includes("/secrets/chat-gw-eu-"))).toBe(true);
  });

  it("GOOGLE_CLOUD_PROJECT names the project when GCP_PROJECT is unset", async () => {
    const config = await loadConfig({ ...BASE_ENV, GCP_PROJECT: undefined, GOOGLE_CLOUD_PROJECT: PROJECT }, connect());
    expect(config.gcpProject).toBe(PROJECT);
    expect(requested).toHaveLength(SECRETS.length);
  });

  it("SECRETS_SOURCE, GCP_PROJECT and SERVICE_ID are read as parseConfig reads them: trimmed, empty means unset", async () => {
    const config = await loadConfig({ ...BASE_ENV, SECRETS_SOURCE: " gcp ", GCP_PROJECT: "", GOOGLE_CLOUD_PROJECT: ` ${PROJECT} `, SERVICE_ID: "" }, connect());
    expect(config).toMatchObject({ secretsSource: "gcp", gcpProject: PROJECT, serviceId: "chat-gateway", serviceSecret: VALUES.SERVICE_SECRET });
    expect([...requested].sort()).toEqual(SECRETS.map((spec) => secretVersionName(PROJECT, "chat-gateway", spec)).sort());
  });

  it("Secret Manager's values take precedence over the same settings in the environment", async () => {
    const config = await loadConfig({ ...BASE_ENV, JWT_SECRET_KEY: "stale-env-jwt-key-0123456789abcdef0123456" }, connect());
    expect(config.jwt.secretKey).toBe(VALUES.JWT_SECRET_KEY);
  });

  it("the optional jwt-secret-key-previous may be missing (NOT_FOUND) outside a rotation", async () => {
    serve({ JWT_SECRET_KEY_PREVIOUS: { code: grpc.status.NOT_FOUND } });
    const config = await loadConfig(BASE_ENV, connect());
    expect(config.jwt.previousSecretKey).toBeUndefined();
    expect(config.jwt.secretKey).toBe(VALUES.JWT_SECRET_KEY);
  });

  it("the optional jwt-secret-key-previous may have its latest version disabled (FAILED_PRECONDITION) after a rotation", async () => {
    serve({ JWT_SECRET_KEY_PREVIOUS: { code: grpc.status.FAILED_PRECONDITION } });
    const config = await loadConfig(BASE_ENV, connect());
    expect(config.jwt.previousSecretKey).toBeUndefined();
  });

  it("the optional service-secret-previous may be missing (NOT_FOUND) or disabled (FAILED_PRECONDITION) outside a rotation", async () => {
    for (const code of [grpc.status.NOT_FOUND, grpc.status.FAILED_PRECONDITION]) {
      serve({ SERVICE_SECRET_PREVIOUS: { code } });
      const config = await loadConfig(BASE_ENV, connect());
      expect(config.previousServiceSecret).toBeUndefined();
      expect(config.serviceSecret).toBe(VALUES.SERVICE_SECRET);
    }
  });

  it("with AUTH_JWKS_URL, a missing jwt-secret-key is fine", async () => {
    serve({ JWT_SECRET_KEY: { code: grpc.status.NOT_FOUND }, JWT_SECRET_KEY_PREVIOUS: { code: grpc.status.NOT_FOUND } });
    const config = await loadConfig({ ...BASE_ENV, AUTH_JWKS_URL: "https://auth.example.test/jwks.json" }, connect());
    expect(config.jwt.secretKey).toBeUndefined();
    expect(config.jwt.jwksUrl).toBe("https://auth.example.test/jwks.json");
  });

  it("with SECRETS_SOURCE=env, Secret Manager is never contacted", async () => {
    let connected = false;
    const config = await loadConfig(
      { ...BASE_ENV, SECRETS_SOURCE: "env", JWT_SECRET_KEY: VALUES.JWT_SECRET_KEY, SERVICE_SECRET: VALUES.SERVICE_SECRET },
      async () => {
        connected = true;
        return connect()();
      },
    );
    expect(connected).toBe(false);
    expect(requested).toHaveLength(0);
    expect(config.secretsSource).toBe("env");
  });
});

describe("the agent webhook's key (agent-webhook-secret)", () => {
  const WITH_URL = { ...BASE_ENV, AGENT_WEBHOOK_URL: "https://agent.example.test/webhook" };

  it("is not needed without AGENT_WEBHOOK_URL: its absence (NOT_FOUND) is no problem", async () => {
    const config = await loadConfig(BASE_ENV, connect());
    expect(config.agentWebhook).toMatchObject({ url: undefined, secret: undefined });
  });

  it("is read with the others when AGENT_WEBHOOK_URL is set", async () => {
    serve({ AGENT_WEBHOOK_SECRET: { value: WEBHOOK_KEY } });
    const config = await loadConfig(WITH_URL, connect());
    expect(config.agentWebhook).toMatchObject({ url: WITH_URL.AGENT_WEBHOOK_URL, secret: WEBHOOK_KEY });
  });

  it("is required when AGENT_WEBHOOK_URL is set: its absence stops startup, naming the secret once", async () => {
    const error = await configError(loadConfig(WITH_URL, connect()));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toContain(`projects/${PROJECT}/secrets/chat-gateway-agent-webhook-secret/versions/latest`);
    expect(error.problems[0]).toContain("AGENT_WEBHOOK_SECRET");
    expect(error.message).not.toContain("agent.example.test");
  });
});

describe("missing or unreadable secrets", () => {
  it("one missing secret (NOT_FOUND) is a ConfigError naming its full resource name and its setting", async () => {
    serve({ SERVICE_SECRET: { code: grpc.status.NOT_FOUND } });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(error.problems).toHaveLength(1);
    const [problem] = error.problems;
    expect(problem).toContain(`projects/${PROJECT}/secrets/chat-gateway-service-secret/versions/latest`);
    expect(problem).toContain("SERVICE_SECRET");
    expect(problem).toContain("NOT_FOUND");
    // Reported once, as the secret, not again as "SERVICE_SECRET is required".
    expect(error.message).not.toMatch(/SERVICE_SECRET is required/);
  });

  it("PERMISSION_DENIED names the secret and says PERMISSION_DENIED", async () => {
    serve({ JWT_SECRET_KEY: { code: grpc.status.PERMISSION_DENIED } });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toContain(nameOf("JWT_SECRET_KEY"));
    expect(error.problems[0]).toContain("JWT_SECRET_KEY");
    expect(error.problems[0]).toContain("PERMISSION_DENIED");
    expect(error.problems[0]).toContain("roles/secretmanager.secretAccessor");
  });

  it("four secrets missing at once are all named in one ConfigError", async () => {
    // The seed incident: four secrets were never deployed, and the old system answered 403 for days.
    serve({
      JWT_SECRET_KEY: { code: grpc.status.NOT_FOUND },
      SERVICE_SECRET: { code: grpc.status.NOT_FOUND },
      REDIS_PASSWORD: { code: grpc.status.NOT_FOUND },
      REDIS_TLS_CA: { code: grpc.status.NOT_FOUND },
      JWT_SECRET_KEY_PREVIOUS: { code: grpc.status.NOT_FOUND },
    });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(error.problems).toHaveLength(4);
    for (const env of ["JWT_SECRET_KEY", "SERVICE_SECRET", "REDIS_PASSWORD", "REDIS_TLS_CA"] as const) {
      const naming = error.problems.filter((p) => p.includes(nameOf(env)));
      expect(naming, env).toHaveLength(1);
      expect(naming[0]).toContain(env);
      expect(naming[0]).toContain("NOT_FOUND");
    }
    expect(error.message).toMatch(/^Invalid configuration \(4 problems\)/);
    expect(error.message).not.toContain("jwt-secret-key-previous");
  });

  it("a PERMISSION_DENIED on the optional previous key is still reported: it exists but cannot be read", async () => {
    serve({ JWT_SECRET_KEY_PREVIOUS: { code: grpc.status.PERMISSION_DENIED } });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toContain(nameOf("JWT_SECRET_KEY_PREVIOUS"));
    expect(error.problems[0]).toContain("PERMISSION_DENIED");
  });

  it.each([
    [grpc.status.FAILED_PRECONDITION, "FAILED_PRECONDITION"],
    [grpc.status.UNAUTHENTICATED, "UNAUTHENTICATED"],
  ])("gRPC status %s is named as %s", async (code, label) => {
    serve({ REDIS_PASSWORD: { code } });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toContain(nameOf("REDIS_PASSWORD"));
    expect(error.problems[0]).toContain(label);
  });

  it("an empty latest version is named", async () => {
    serve({ SERVICE_SECRET: { value: "  \n" } });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toContain(nameOf("SERVICE_SECRET"));
    expect(error.problems[0]).toMatch(/empty/);
  });

  it("secret problems and setting problems are reported together in one ConfigError", async () => {
    serve({ SERVICE_SECRET: { code: grpc.status.NOT_FOUND } });
    const error = await configError(loadConfig({ ...BASE_ENV, REDIS_URL: undefined, PORT: "eighty" }, connect()));
    expect(error.problems).toHaveLength(3);
    expect(error.message).toContain(nameOf("SERVICE_SECRET"));
    expect(error.message).toContain("REDIS_URL is required");
    expect(error.message).toContain("PORT must be an integer");
  });

  it("a secret read from Secret Manager is still checked, and its value never echoed", async () => {
    serve({ SERVICE_SECRET: { value: "short-gcp-service-secret" } });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(error.problems).toEqual(["SERVICE_SECRET must be at least 32 bytes long"]);
    for (const value of [...Object.values(VALUES), "short-gcp-service-secret"]) expect(error.message).not.toContain(value);
  });

  it("no secret value appears in the error when some secrets are missing and others were read", async () => {
    serve({ REDIS_TLS_CA: { code: grpc.status.NOT_FOUND } });
    const error = await configError(loadConfig(BASE_ENV, connect()));
    for (const value of Object.values(VALUES)) expect(error.message).not.toContain(value.trim());
  });

  it("a Secret Manager that never answers fails within the 5 s startup limit, naming every secret", async () => {
    serve({
      JWT_SECRET_KEY: { hang: true },
      JWT_SECRET_KEY_PREVIOUS: { hang: true },
      SERVICE_SECRET: { hang: true },
      SERVICE_SECRET_PREVIOUS: { hang: true },
      REDIS_PASSWORD: { hang: true },
      REDIS_TLS_CA: { hang: true },
    });
    const started = Date.now();
    const error = await configError(loadConfig(BASE_ENV, connect()));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error.problems).toHaveLength(6);
    for (const env of Object.keys(VALUES) as SecretEnv[]) {
      expect(error.problems.filter((p) => p.includes(nameOf(env))), env).toHaveLength(1);
    }
    expect(error.message).toMatch(/no answer within/);
  });

  it("an unreachable Secret Manager fails fast, naming every secret and saying UNAVAILABLE", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const started = Date.now();
    const error = await configError(loadConfig(BASE_ENV, connect(closedPort)));
    expect(Date.now() - started).toBeLessThan(5000);
    // Every secret, the optional ones too: UNAVAILABLE is not "absent".
    expect(error.problems).toHaveLength(SECRETS.length);
    for (const env of SECRETS.map((spec) => spec.env)) {
      const naming = error.problems.filter((p) => p.includes(nameOf(env)));
      expect(naming, env).toHaveLength(1);
      expect(naming[0]).toContain("UNAVAILABLE");
    }
  });

  it("without a project, Secret Manager is not contacted and GCP_PROJECT is named", async () => {
    const error = await configError(loadConfig({ ...BASE_ENV, GCP_PROJECT: undefined }, connect()));
    expect(requested).toHaveLength(0);
    expect(error.message).toContain("GCP_PROJECT is required");
  });
});
