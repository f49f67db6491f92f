import * as pulumi from "@pulumi/pulumi";
import { CLOUD_RUN_MAX_CONCURRENCY, socketsPerInstance } from "./capacity.js";

/**
 * The stack configuration of the chat gateway, typed and range-checked in one
 * place. Like the service's own `parseConfig`, it reads everything, applies
 * the defaults and reports *every* problem at once in a single error that
 * names each key and the reason, before a single resource is registered: a
 * broken `Pulumi.<stack>.yaml` is fixed in one round, not discovered by the
 * GCP API one 400 at a time.
 *
 * Secrets (`jwtSecretKey`, `jwtSecretKeyPrevious`) come from
 * `pulumi config set --secret` and leave this module only wrapped in
 * `pulumi.secret`, so they never appear in plain text in the state or logs.
 */

export const REDIS_TIERS = ["BASIC", "STANDARD_HA"] as const;
export type RedisTier = (typeof REDIS_TIERS)[number];
/** `instance`: one Memorystore for Redis instance (REDIS_URL). `cluster`: Memorystore for Redis Cluster (REDIS_CLUSTER_NODES). */
export const REDIS_MODES = ["instance", "cluster"] as const;
export type RedisMode = (typeof REDIS_MODES)[number];
/** Memorystore for Redis Cluster node types (@pulumi/gcp 9.37, redis/cluster.d.ts `nodeType`). */
export const REDIS_CLUSTER_NODE_TYPES = [
  "REDIS_SHARED_CORE_NANO",
  "REDIS_STANDARD_SMALL",
  "REDIS_HIGHCPU_MEDIUM",
  "REDIS_HIGHMEM_MEDIUM",
  "REDIS_HIGHMEM_XLARGE",
  "REDIS_HIGHMEM_2XLARGE",
  "REDIS_STANDARD_LARGE",
] as const;
export type RedisClusterNodeType = (typeof REDIS_CLUSTER_NODE_TYPES)[number];
/** The gateway uses sharded pub/sub (SPUBLISH/SSUBSCRIBE) everywhere: Redis 7.0 or later. */
export const MIN_REDIS_VERSION = [7, 0] as const;
/** Keys that only one Redis shape reads; setting one for the other shape is a mistake, reported. */
const INSTANCE_ONLY_KEYS = ["redisTier", "redisSizeGb", "redisVersion"] as const;
const CLUSTER_ONLY_KEYS = [
  "redisShardCount",
  "redisReplicaCount",
  "redisNodeType",
  "redisPscSubnetCidr",
  "redisPasswordGeneration",
  "redisPreviousPasswordGeneration",
] as const;

/** Cloud Run accepts exactly these CPU limits. */
export const CPU_LIMITS = ["1", "2", "4", "6", "8"] as const;
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
/** The service refuses shorter secrets (service/src/config.ts, MIN_SECRET_BYTES). */
const MIN_SECRET_BYTES = 32;

export const DEFAULT_RUNBOOK_BASE_URL = "https://github.com/example-org/chat-gateway/blob/main/docs/operations.md";

export interface StackConfig {
  /** The Pulumi stack name, e.g. `staging`. */
  readonly stack: string;
  /** Stacks named `production` or `prod…` must be highly available and protected. */
  readonly production: boolean;
  readonly project: string;
  readonly region: string;
  /** Cloud Run service name, SERVICE_ID of the gateway and the prefix of every secret id. */
  readonly serviceId: string;
  readonly image: string;
  /** The public host name of the load balancer, e.g. `chat.example.com`. */
  readonly domain: string;
  readonly alertEmails: readonly string[];
  readonly allowedOrigins: readonly string[];
  /** Which Memorystore product holds the tickets, history and bus. */
  readonly redisMode: RedisMode;
  /** Instance shape only (`redisMode: instance`). */
  readonly redisTier: RedisTier;
  readonly redisSizeGb: number;
  /** At least REDIS_7_0 (sharded pub/sub). */
  readonly redisVersion: string;
  /** Cluster shape only (`redisMode: cluster`): primaries, 1..250. */
  readonly redisShardCount: number;
  /** Cluster shape only: replicas per shard, 0..2 (at least 1 in production). */
  readonly redisReplicaCount: number;
  readonly redisNodeType: RedisClusterNodeType;
  /** Cluster shape only: the subnet the cluster's Private Service Connect endpoints take addresses from. */
  readonly redisPscSubnetCidr: string;
  /** Cluster shape only: raising it rotates the gateway's ACL password (docs/operations.md#rotate-the-redis-password-redis_password). */
  readonly redisPasswordGeneration: number;
  /** Cluster shape only, during a rotation: this older generation's password stays accepted. */
  readonly redisPreviousPasswordGeneration: number | undefined;
  readonly minInstances: number;
  readonly maxInstances: number;
  /** Requests (each open WebSocket is one) per instance. */
  readonly concurrency: number;
  readonly cpu: string;
  readonly memory: string;
  /** The subnet Cloud Run's Direct VPC egress takes its addresses from. */
  readonly subnetCidr: string;
  readonly deletionProtection: boolean;
  /** The URL of docs/operations.md; alert policies link `${runbookBaseUrl}#<anchor>`. */
  readonly runbookBaseUrl: string;
  readonly logLevel: string;
  readonly jwtIssuer: string | undefined;
  readonly jwtAudience: string | undefined;
  /** Cloud Armor: ticket requests per client IP per minute before the edge answers 429. */
  readonly ticketEdgeRateLimitPerMinute: number;
  /**
   * The agent backend's webhook (AGENT_WEBHOOK_URL): https, or http to a
   * loopback address for an agent running as a sidecar in the same instance.
   * Unset: the gateway serves agent events only and answers chat_message with
   * CHAT_UNAVAILABLE.
   */
  readonly agentWebhookUrl: string | undefined;
  readonly alerts: {
    /** Rejected / all WebSocket authentications over 5 minutes. */
    readonly authFailureRatio: number;
    /** 5xx / all Cloud Run requests over 5 minutes. */
    readonly http5xxRatio: number;
    /** 1011 INTERNAL_ERROR closes in 5 minutes. */
    readonly internalErrorCloses: number;
  };
}

export interface StackSecrets {
  readonly jwtSecretKey: pulumi.Output<string>;
  /** Only set during a JWT key rotation. */
  readonly jwtSecretKeyPrevious: pulumi.Output<string> | undefined;
  /** The internal API secret; unset: generated by the program (docs/operations.md, "Rotate the service secret"). */
  readonly serviceSecret?: pulumi.Output<string> | undefined;
  /** Only set during a service secret rotation: the value agent backends may still send. */
  readonly serviceSecretPrevious?: pulumi.Output<string> | undefined;
  /** `whsec_…` shared with the agent backend; unset: generated when agentWebhookUrl is set. */
  readonly agentWebhookSecret: pulumi.Output<string> | undefined;
}

export class StackConfigError extends Error {
  constructor(
    readonly stackName: string,
    readonly problems: readonly string[],
  ) {
    super(
      `Invalid configuration of stack "${stackName}" (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`,
    );
    this.name = "StackConfigError";
  }
}

/** Reads one raw config value (as Pulumi hands it over: a string, JSON for lists). */
export type ConfigSource = (key: string) => string | undefined;

/**
 * Parses and range-checks the plain (non-secret) settings. Pure, so the checks
 * can be tested without a Pulumi runtime. Throws a StackConfigError naming
 * every problem.
 */
export function parseStackConfig(get: ConfigSource, stack: string): StackConfig {
  const problems: string[] = [];
  const production = stack === "production" || stack.startsWith("prod");

  const str = (key: string): string | undefined => {
    const v = get(key)?.trim();
    return v === undefined || v === "" ? undefined : v;
  };
  const required = (key: string, what: string): string => {
    const v = str(key);
    if (v === undefined) problems.push(`${key} is required (${what})`);
    return v ?? "";
  };
  const matching = (key: string, value: string, pattern: RegExp, what: string): string => {
    if (value !== "" && !pattern.test(value)) problems.push(`${key} must be ${what}; got "${value}"`);
    return value;
  };
  const int = (key: string, def: number, min: number, max: number, unit: string): number => {
    const raw = str(key);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${key} must be an integer from ${min} to ${max} (${unit}), e.g. ${def}; got "${raw}"`);
      return def;
    }
    return n;
  };
  const ratio = (key: string, def: number): number => {
    const raw = str(key);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0 || n >= 1) {
      problems.push(`${key} must be a ratio between 0 and 1 exclusive, e.g. ${def} (0.01 is 1%); got "${raw}"`);
      return def;
    }
    return n;
  };
  const bool = (key: string, def: boolean): boolean => {
    const raw = str(key);
    if (raw === undefined) return def;
    if (raw !== "true" && raw !== "false") {
      problems.push(`${key} must be true or false, e.g. ${def}; got "${raw}"`);
      return def;
    }
    return raw === "true";
  };
  const oneOf = <T extends string>(key: string, allowed: readonly T[], def: T): T => {
    const raw = str(key);
    if (raw === undefined) return def;
    if (!(allowed as readonly string[]).includes(raw)) {
      problems.push(`${key} must be one of ${allowed.join(", ")}, e.g. ${def}; got "${raw}"`);
      return def;
    }
    return raw as T;
  };
  /** A YAML list (JSON from Pulumi) or a comma-separated string (`pulumi config set k "a,b"`). */
  const list = (key: string): string[] => {
    const raw = str(key);
    if (raw === undefined) return [];
    if (raw.startsWith("[")) {
      try {
        const parsed: unknown = JSON.parse(raw);
        if (Array.isArray(parsed) && parsed.every((x) => typeof x === "string")) return parsed.map((x) => x.trim()).filter(Boolean);
      } catch {
        /* reported below */
      }
      problems.push(`${key} must be a list of strings, e.g. ["a@example.com"]`);
      return [];
    }
    return raw.split(",").map((x) => x.trim()).filter(Boolean);
  };

  const project = matching(
    "project",
    required("project", "the GCP project id, e.g. acme-chat-prod"),
    /^[a-z][a-z0-9-]{4,28}[a-z0-9]$/,
    "a GCP project id (6-30 lower-case letters, digits, dashes) like acme-chat-prod",
  );
  const region = matching("region", required("region", "the GCP region, e.g. europe-west1"), /^[a-z]+-[a-z]+\d+$/, "a GCP region like europe-west1");

  // 20 characters at most: the Redis instance id (40 max) is `${serviceId}-redis-` plus
  // Pulumi's 7-character suffix, and the service account id (30 max) is `${serviceId}-run`.
  const serviceId = matching(
    "serviceId",
    str("serviceId") ?? "chat-gateway",
    /^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$/,
    "lower-case letters, digits and dashes, at most 20 characters, e.g. chat-gateway (it names the Cloud Run service, the secrets and the service account)",
  );

  const image = required("image", "the container image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/gateway@sha256:…");
  if (image !== "") {
    if (!/^[a-z0-9.-]+(?::\d+)?\/[a-z0-9._\/-]+(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$/.test(image)) {
      problems.push(`image must be a registry image reference like europe-west1-docker.pkg.dev/PROJECT/REPO/gateway:TAG; got "${image}"`);
    } else if (!/[:@][\w.:-]+$/.test(image.slice(image.lastIndexOf("/")))) {
      problems.push("image must name a tag or a digest, e.g. …/gateway:0.1.0 or …/gateway@sha256:<64 hex> (an untagged image means :latest, which moves)");
    } else if (/:latest(?:@|$)/.test(image)) {
      problems.push("image must not use the :latest tag, use e.g. …/gateway:0.1.0 (it moves: revisions would not be reproducible)");
    } else if (production && !/@sha256:[0-9a-f]{64}$/.test(image)) {
      problems.push("image must be pinned by digest (…@sha256:<64 hex>) in a production stack");
    }
  }

  const domain = matching(
    "domain",
    required("domain", "the public host name, e.g. chat.example.com"),
    /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/,
    "a lower-case host name without scheme or path, like chat.example.com",
  );

  const alertEmails = list("alertEmails");
  if (alertEmails.length === 0 && str("alertEmails") === undefined) problems.push("alertEmails is required (at least one address that receives alerts, e.g. [oncall@example.com])");
  for (const email of alertEmails) {
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) problems.push(`alertEmails entry "${email}" is not an e-mail address like oncall@example.com`);
  }

  const allowedOrigins = list("allowedOrigins");
  if (allowedOrigins.length === 0 && str("allowedOrigins") === undefined) {
    problems.push("allowedOrigins is required (the exact origins of the chat web app, e.g. [https://app.example.com]; the service refuses to start without them in production)");
  }
  for (const origin of allowedOrigins) {
    let canonical: string | undefined;
    try {
      canonical = new URL(origin).origin;
    } catch {
      /* reported below */
    }
    if (canonical !== origin) problems.push(`allowedOrigins entry "${origin}" is not an exact origin like https://chat.example.com`);
    else if (production && !origin.startsWith("https://")) problems.push(`allowedOrigins entry "${origin}" must use https in a production stack`);
  }

  const agentWebhookUrl = str("agentWebhookUrl");
  if (agentWebhookUrl !== undefined) {
    const problem = webhookUrlProblem(agentWebhookUrl);
    if (problem !== undefined) problems.push(`agentWebhookUrl ${problem}`);
  }

  const redisMode = oneOf("redisMode", REDIS_MODES, "instance");
  const misplaced = redisMode === "cluster" ? INSTANCE_ONLY_KEYS : CLUSTER_ONLY_KEYS;
  for (const key of misplaced) {
    if (str(key) !== undefined) problems.push(`${key} is a setting of redisMode ${redisMode === "cluster" ? "instance" : "cluster"}, but redisMode is ${redisMode}: remove it or change redisMode`);
  }

  const redisTier = oneOf("redisTier", REDIS_TIERS, production ? "STANDARD_HA" : "BASIC");
  if (production && redisMode === "instance" && redisTier !== "STANDARD_HA") {
    problems.push("redisTier must be STANDARD_HA in a production stack (a BASIC instance loses every ticket and the event history on any failure)");
  }
  const redisSizeGb = int("redisSizeGb", 1, 1, 300, "GiB, Memorystore's range");
  const redisVersion = matching("redisVersion", str("redisVersion") ?? "REDIS_7_2", /^REDIS_\d+_\d+$/, "a Memorystore version like REDIS_7_2");
  const version = /^REDIS_(\d+)_(\d+)$/.exec(redisVersion);
  if (version && (Number(version[1]) < MIN_REDIS_VERSION[0] || (Number(version[1]) === MIN_REDIS_VERSION[0] && Number(version[2]) < MIN_REDIS_VERSION[1]))) {
    problems.push(`redisVersion must be REDIS_7_0 or later, e.g. REDIS_7_2 (the gateway uses sharded pub/sub, SPUBLISH/SSUBSCRIBE); got "${redisVersion}"`);
  }

  // https://cloud.google.com/memorystore/docs/cluster/cluster-node-specification: 1 to 250 shards, 0 to 2 replicas per shard.
  const redisShardCount = int("redisShardCount", 3, 1, 250, "shards (primaries) of the cluster, Memorystore's range");
  const redisReplicaCount = int("redisReplicaCount", production ? 1 : 0, 0, 2, "replicas per shard, Memorystore's range");
  if (production && redisMode === "cluster" && redisReplicaCount < 1) {
    problems.push("redisReplicaCount must be at least 1 in a production stack (a shard without a replica loses its tickets and history on any failure)");
  }
  const redisNodeType = oneOf("redisNodeType", REDIS_CLUSTER_NODE_TYPES, "REDIS_HIGHMEM_MEDIUM");
  const redisPscSubnetCidr = str("redisPscSubnetCidr") ?? "10.8.1.0/28";
  const redisPasswordGeneration = int("redisPasswordGeneration", 1, 1, 1_000_000, "raise it by one to rotate the Redis ACL password");
  const redisPreviousPasswordGeneration =
    str("redisPreviousPasswordGeneration") === undefined
      ? undefined
      : int("redisPreviousPasswordGeneration", 1, 1, 1_000_000, "the generation whose password stays accepted during a rotation");
  if (redisPreviousPasswordGeneration !== undefined && redisPreviousPasswordGeneration >= redisPasswordGeneration) {
    problems.push(
      `redisPreviousPasswordGeneration (${redisPreviousPasswordGeneration}) must be lower than redisPasswordGeneration (${redisPasswordGeneration}), e.g. 1 while redisPasswordGeneration is 2`,
    );
  }

  const minInstances = int("minInstances", production ? 1 : 0, 0, 100, "instances");
  const maxInstances = int("maxInstances", 10, 1, 1000, "instances");
  if (minInstances > maxInstances) problems.push(`minInstances (${minInstances}) must not exceed maxInstances (${maxInstances}), e.g. minInstances 1 with maxInstances 10`);
  if (production && minInstances < 1) {
    problems.push("minInstances must be at least 1 in a production stack (a cold start delays the first WebSocket upgrades by seconds)");
  }

  const cpu = oneOf("cpu", CPU_LIMITS, "1");
  const memory = matching("memory", str("memory") ?? "1Gi", /^(?:[1-9]\d{2,4}Mi|[1-9]\d?Gi)$/, "a Cloud Run memory limit like 512Mi or 2Gi");
  // Every open WebSocket is one concurrent request (infra/capacity.ts, docs/operations.md#capacity).
  const concurrency = int("concurrency", CLOUD_RUN_MAX_CONCURRENCY, 1, CLOUD_RUN_MAX_CONCURRENCY, "concurrent requests per instance; every open WebSocket counts as one");
  if (/^(?:[1-9]\d{2,4}Mi|[1-9]\d?Gi)$/.test(memory) && concurrency > socketsPerInstance(memory)) {
    problems.push(
      `concurrency (${concurrency}) is more sockets than memory ${memory} holds by the measured figures (${socketsPerInstance(memory)}, docs/operations.md#capacity); raise memory, e.g. 1Gi, or lower concurrency`,
    );
  }

  const subnetCidr = str("subnetCidr") ?? "10.8.0.0/24";
  const cidr = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(subnetCidr);
  const prefix = cidr ? Number(cidr[5]) : NaN;
  if (!cidr || cidr.slice(1, 5).some((o) => Number(o) > 255)) {
    problems.push(`subnetCidr must be an IPv4 CIDR range like 10.8.0.0/24; got "${subnetCidr}"`);
  } else if (prefix < 16 || prefix > 26) {
    // https://cloud.google.com/run/docs/configuring/vpc-direct-vpc#ip-address-allocation
    problems.push(`subnetCidr must be a /16 to /26 range like 10.8.0.0/24 (Direct VPC egress needs at least a /26); got /${prefix}`);
  } else {
    // Direct VPC egress uses up to two addresses per instance (during a revision rollout both
    // revisions hold addresses), and GCP reserves four per subnet.
    const usable = 2 ** (32 - prefix) - 4;
    if (maxInstances * 2 > usable) {
      problems.push(`maxInstances (${maxInstances}) needs ${maxInstances * 2} addresses for Direct VPC egress, but subnetCidr /${prefix} has ${usable}; use a larger range`);
    }
  }

  if (redisMode === "cluster") {
    const psc = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(redisPscSubnetCidr);
    const pscPrefix = psc ? Number(psc[5]) : NaN;
    if (!psc || psc.slice(1, 5).some((o) => Number(o) > 255) || pscPrefix < 16 || pscPrefix > 29) {
      problems.push(`redisPscSubnetCidr must be an IPv4 CIDR range from /16 to /29 like 10.8.1.0/28; got "${redisPscSubnetCidr}"`);
    } else if (cidr && rangesOverlap(subnetCidr, redisPscSubnetCidr)) {
      problems.push(`redisPscSubnetCidr (${redisPscSubnetCidr}) must not overlap subnetCidr (${subnetCidr})`);
    }
  }

  const deletionProtection = bool("deletionProtection", true);
  if (production && !deletionProtection) problems.push("deletionProtection must be true in a production stack");

  const runbookBaseUrl = str("runbookBaseUrl") ?? DEFAULT_RUNBOOK_BASE_URL;
  try {
    const u = new URL(runbookBaseUrl);
    if (u.protocol !== "https:" || u.hash !== "") throw new Error();
  } catch {
    problems.push(`runbookBaseUrl must be an https URL of docs/operations.md without a #fragment, like ${DEFAULT_RUNBOOK_BASE_URL}; got "${runbookBaseUrl}"`);
  }

  const logLevel = oneOf("logLevel", LOG_LEVELS, "info");
  const ticketEdgeRateLimitPerMinute = int("ticketEdgeRateLimitPerMinute", 1200, 10, 100_000, "ticket requests per client IP per minute at Cloud Armor");

  const config: StackConfig = {
    stack,
    production,
    project,
    region,
    serviceId,
    image,
    domain,
    alertEmails,
    allowedOrigins,
    redisMode,
    redisTier,
    redisSizeGb,
    redisVersion,
    redisShardCount,
    redisReplicaCount,
    redisNodeType,
    redisPscSubnetCidr,
    redisPasswordGeneration,
    redisPreviousPasswordGeneration,
    minInstances,
    maxInstances,
    concurrency,
    cpu,
    memory,
    subnetCidr,
    deletionProtection,
    runbookBaseUrl,
    logLevel,
    jwtIssuer: str("jwtIssuer"),
    jwtAudience: str("jwtAudience"),
    ticketEdgeRateLimitPerMinute,
    agentWebhookUrl,
    alerts: {
      authFailureRatio: ratio("authFailureRatioAlert", 0.01),
      http5xxRatio: ratio("http5xxRatioAlert", 0.02),
      internalErrorCloses: int("internalErrorClosesAlert", 20, 1, 100_000, "1011 closes per 5 minutes"),
    },
  };
  if (problems.length > 0) throw new StackConfigError(stack, problems);
  return config;
}

/**
 * Why a webhook URL would be refused by the gateway in production
 * (service/src/config.ts), or undefined: https, or plain http to a loopback
 * address only (an agent sidecar in the same instance); no credentials.
 */
function webhookUrlProblem(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "must be a URL like https://agent.example.com/webhook";
  }
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const loopback = host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
    return "must use https (plain http only to a loopback address, for an agent running as a sidecar in the same instance)";
  }
  if (url.username !== "" || url.password !== "") return "must not carry credentials (the hand-off is signed with the agent webhook secret)";
  return undefined;
}

/** True when two IPv4 CIDR ranges (already checked for syntax) share an address. */
function rangesOverlap(a: string, b: string): boolean {
  const range = (c: string): [number, number] => {
    const [ip, len] = c.split("/") as [string, string];
    const start = ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
    const size = 2 ** (32 - Number(len));
    const first = start - (start % size);
    return [first, first + size - 1];
  };
  const [a0, a1] = range(a);
  const [b0, b1] = range(b);
  return a0 <= b1 && b0 <= a1;
}

/**
 * Checks the secret settings. `get` returns the decrypted value: it is read
 * here only to check its length, then wrapped in `pulumi.secret` at once.
 */
export function parseStackSecrets(get: ConfigSource, stack: string): StackSecrets {
  const problems: string[] = [];
  const check = (key: string, value: string | undefined, isRequired: boolean): pulumi.Output<string> | undefined => {
    if (value === undefined || value.trim() === "") {
      if (isRequired) problems.push(`${key} is required: pulumi config set --secret ${key} <value> (shared with the auth service)`);
      return undefined;
    }
    if (Buffer.byteLength(value) < MIN_SECRET_BYTES) problems.push(`${key} must be at least ${MIN_SECRET_BYTES} bytes long (the gateway refuses shorter keys)`);
    return pulumi.secret(value);
  };
  const jwtSecretKey = check("jwtSecretKey", get("jwtSecretKey"), true);
  const jwtSecretKeyPrevious = check("jwtSecretKeyPrevious", get("jwtSecretKeyPrevious"), false);
  const serviceSecret = check("serviceSecret", get("serviceSecret"), false);
  const serviceSecretPrevious = check("serviceSecretPrevious", get("serviceSecretPrevious"), false);
  const webhookSecret = get("agentWebhookSecret")?.trim() || undefined;
  const match = webhookSecret === undefined ? null : /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(webhookSecret);
  const webhookKeyBytes = match ? Buffer.from(match[1]!, "base64").length : 0;
  if (webhookSecret !== undefined && (webhookKeyBytes < 24 || webhookKeyBytes > 64)) {
    problems.push("agentWebhookSecret must be whsec_ followed by the base64 of 24 to 64 random bytes (or unset: one is generated)");
  }
  if (problems.length > 0 || jwtSecretKey === undefined) throw new StackConfigError(stack, problems);
  return {
    jwtSecretKey,
    jwtSecretKeyPrevious,
    serviceSecret,
    serviceSecretPrevious,
    agentWebhookSecret: webhookSecret === undefined ? undefined : pulumi.secret(webhookSecret),
  };
}

/** Reads the current stack's configuration from Pulumi (`chat-gateway:<key>`). */
export function loadStackConfig(): { config: StackConfig; secrets: StackSecrets } {
  const cfg = new pulumi.Config("chat-gateway");
  const stack = pulumi.getStack();
  // `cfg.get` on a secret key returns the decrypted text exactly as `getSecret`
  // does before wrapping it; parseStackSecrets wraps it before it goes anywhere.
  const get: ConfigSource = (key) => cfg.get(key);
  let config: StackConfig | undefined;
  const problems: string[] = [];
  try {
    config = parseStackConfig(get, stack);
  } catch (err) {
    if (!(err instanceof StackConfigError)) throw err;
    problems.push(...err.problems);
  }
  let secrets: StackSecrets | undefined;
  try {
    secrets = parseStackSecrets(get, stack);
  } catch (err) {
    if (!(err instanceof StackConfigError)) throw err;
    problems.push(...err.problems);
  }
  if (problems.length > 0 || config === undefined || secrets === undefined) throw new StackConfigError(stack, problems);
  return { config, secrets };
}
