/**
 * The rules of ./config.ts beyond one value's range: the Redis shape (one
 * Redis or one cluster, TLS, ACL user), the browser origins and the agent
 * webhook (URL and key together). Each pushes every problem it finds and
 * throws nothing.
 */
import { isExactOrigin, isLoopbackHost, isWebhookSecret, type SettingName } from "./settings.js";

export interface RedisConfig {
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
}

/** ALLOWED_ORIGINS: comma-separated exact origins; in production at least one. */
export function allowedOrigins(raw: string | undefined, production: boolean, problems: string[]): string[] {
  const origins = (raw ?? "").split(",").map((o) => o.trim()).filter(Boolean);
  // Checked on the list, not the raw value: only commas or blanks ("," or " , ") is set but names no origin.
  if (production && origins.length === 0) problems.push("ALLOWED_ORIGINS is required (in production: comma-separated exact origins)");
  for (const origin of origins) {
    if (!isExactOrigin(origin)) problems.push(`ALLOWED_ORIGINS entry "${origin}" is not an exact origin like https://chat.example.com`);
  }
  return origins;
}

interface RedisReaders {
  readonly str: (name: SettingName) => string | undefined;
  readonly choice: (name: "REDIS_TLS") => string | undefined;
  readonly url: (name: SettingName, protocols: readonly string[]) => string | undefined;
  readonly production: boolean;
  readonly reported: ReadonlySet<string>;
  readonly problems: string[];
}

/** REDIS_*: one Redis (REDIS_URL) or one Redis Cluster (REDIS_CLUSTER_NODES), never both; in production one of them. */
export function redisSettings({ str, choice, url, production, reported, problems }: RedisReaders): RedisConfig {
  const redisUrl = url("REDIS_URL", ["redis:", "rediss:"]);
  const redisCluster = clusterNodes(str("REDIS_CLUSTER_NODES"), problems);
  const redisTls = choice("REDIS_TLS");
  if (redisUrl !== undefined && redisCluster !== undefined) {
    problems.push("REDIS_URL and REDIS_CLUSTER_NODES are mutually exclusive: set REDIS_URL for one Redis, or REDIS_CLUSTER_NODES for a Redis Cluster");
  } else if (production && redisUrl === undefined && redisCluster === undefined && str("REDIS_CLUSTER_NODES") === undefined && !reported.has("REDIS_URL")) {
    problems.push("REDIS_URL is required (in production, or REDIS_CLUSTER_NODES for a Redis Cluster; the in-memory store serves one instance only)");
  }
  if (redisTls !== undefined && str("REDIS_URL") !== undefined && (redisTls === "true") !== str("REDIS_URL")!.startsWith("rediss:")) {
    problems.push("REDIS_TLS contradicts REDIS_URL: with REDIS_URL the scheme chooses TLS (rediss://); REDIS_TLS is for REDIS_CLUSTER_NODES");
  }
  const tlsCa = str("REDIS_TLS_CA");
  if (redisCluster !== undefined && redisTls !== "true" && tlsCa !== undefined) {
    problems.push("REDIS_TLS_CA is set but REDIS_TLS is not \"true\": the cluster would be reached without TLS; set REDIS_TLS=true");
  }
  if (tlsCa !== undefined && !tlsCa.includes("-----BEGIN CERTIFICATE-----")) problems.push("REDIS_TLS_CA must be a PEM certificate");

  // An ACL user (Memorystore for Redis Cluster's ACL policy) authenticates with REDIS_PASSWORD.
  const username = str("REDIS_USERNAME");
  if (username !== undefined && !/^[A-Za-z0-9_.@-]{1,128}$/.test(username)) {
    problems.push("REDIS_USERNAME must be 1-128 letters, digits, '_', '.', '@' or '-' (a Redis ACL user name, e.g. chat-gateway)");
  }
  if (username !== undefined && str("REDIS_PASSWORD") === undefined && !reported.has("REDIS_PASSWORD")) {
    problems.push("REDIS_USERNAME is set but REDIS_PASSWORD is not: an ACL user authenticates with its password");
  }
  return {
    url: redisUrl,
    ...(redisCluster === undefined ? {} : { cluster: { nodes: redisCluster, tls: redisTls === "true" } }),
    username,
    password: str("REDIS_PASSWORD"),
    tlsCa,
  };
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

/**
 * AGENT_WEBHOOK_URL and AGENT_WEBHOOK_SECRET. The URL is optional; when set it
 * is https, or (outside production, or to a loopback address for an agent
 * running as a sidecar in the same instance) http; and the secret is then
 * required, in the Standard Webhooks form `whsec_<base64 of 24 to 64 bytes>`.
 * Problems name the setting, never its value: the URL may carry a token.
 */
export function agentWebhook(
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
