import { createHash } from "node:crypto";
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { INTEGER_SETTINGS } from "../service/src/settings.js";
import type { SecretEntry } from "./secrets.js";

/**
 * Cloud Run ends every request, WebSockets included, at the service's request
 * timeout, at most 60 minutes:
 * https://cloud.google.com/run/docs/configuring/request-timeout and
 * https://cloud.google.com/run/docs/triggering/websockets
 */
export const REQUEST_TIMEOUT_SECONDS = 3600;
/**
 * The gateway closes each socket with 4012 CONNECTION_AGE first (its default,
 * 3300 s), so no client meets the platform's cut. Defaults come from the
 * service's declaration (service/src/settings.ts), not copies.
 */
export const MAX_CONNECTION_AGE_SECONDS = INTEGER_SETTINGS.MAX_CONNECTION_AGE_SECONDS.default;
/** Cloud Run sends SIGTERM and kills the instance 10 s later; the gateway drains within its default 8 s. */
export const SHUTDOWN_GRACE_MS = INTEGER_SETTINGS.SHUTDOWN_GRACE_MS.default;
/** Cloud Run sets PORT itself; the container listens on the gateway's default. */
export const CONTAINER_PORT = INTEGER_SETTINGS.PORT.default;
export const METRICS_PORT = INTEGER_SETTINGS.METRICS_PORT.default;
/**
 * Proxies whose X-Forwarded-For entries the gateway trusts for the client IP
 * (its per-IP ticket limit): Google's external load balancer, then Cloud Run's front end.
 */
export const TRUST_PROXY_HOPS = 2;
/**
 * How long the startup probe lets an instance become ready. Direct VPC egress
 * "might experience connection establishment delays of a minute or more on
 * instance startup" (https://cloud.google.com/run/docs/configuring/vpc-direct-vpc,
 * limitations), and the first revision may wait for its secret grants to
 * propagate (below). Cloud Run caps failureThreshold × periodSeconds of a
 * startup probe at 240 s (https://cloud.google.com/run/docs/configuring/healthchecks).
 */
export const STARTUP_PROBE = { periodSeconds: 2, failureThreshold: 120, timeoutSeconds: 1 } as const;
/**
 * IAM grants made in the same apply "typically" take 2 minutes to propagate and
 * "could take 7 minutes or longer"
 * (https://cloud.google.com/iam/docs/access-change-propagation). The gateway
 * retries a PERMISSION_DENIED secret read for this long (a NOT_FOUND secret
 * still fails at once), inside the startup probe's 240 s, so a first revision
 * whose grants are seconds old becomes ready instead of failing the apply.
 */
export const SECRETS_PERMISSION_WAIT_SECONDS = 180;

export interface ServiceArgs {
  readonly project: string;
  readonly region: string;
  /** The Cloud Run service name and the gateway's SERVICE_ID (the secret id prefix). */
  readonly serviceId: string;
  readonly image: string;
  readonly network: pulumi.Input<string>;
  readonly subnetwork: pulumi.Input<string>;
  /**
   * Where Redis is, exactly one of: `url` (`rediss://host:port`, without
   * credentials: one Memorystore instance) or `clusterNodes` (`host:port` of
   * a Memorystore for Redis Cluster's discovery endpoint, always over TLS).
   */
  readonly redis: { readonly url: pulumi.Input<string> } | { readonly clusterNodes: pulumi.Input<string>; readonly username: string };
  readonly allowedOrigins: readonly string[];
  /** The secrets the service reads at startup; its identity gets access to exactly these. */
  readonly secrets: readonly SecretEntry[];
  readonly minInstances: number;
  readonly maxInstances: number;
  readonly concurrency: number;
  readonly cpu: string;
  readonly memory: string;
  readonly logLevel: string;
  readonly jwtIssuer?: string | undefined;
  readonly jwtAudience?: string | undefined;
  /** AGENT_WEBHOOK_URL (not a secret; its key is the agent-webhook-secret). Unset: no chat hand-off. */
  readonly agentWebhookUrl?: string | undefined;
  readonly deletionProtection: boolean;
  /** Resources the revision must not start before, besides its secrets (e.g. the Redis ACL policy that admits its user). */
  readonly startAfter?: readonly pulumi.Resource[];
}

/**
 * The gateway on Cloud Run, run by an identity of its own that can read its
 * secrets and nothing else, reachable only through the external load balancer
 * (ingress INTERNAL_LOAD_BALANCER; the run.app URL answers 404 from the
 * internet; the invoker check is disabled instead of granting allUsers), and
 * shaped for long-lived WebSockets: a 3600 s request timeout
 * with the gateway closing sockets at 3300 s itself, CPU always allocated
 * (heartbeats and fan-out happen between requests), session affinity (best
 * effort: reconnects usually land on a warm instance), startup CPU boost, and
 * a startup probe on /readyz (up to 240 s), so a revision that cannot read its secrets or
 * reach Redis never receives traffic. The revision is created only after its
 * secret versions and their IAM grants exist, and a new secret version rolls a
 * new revision (the gateway reads secrets at startup only).
 */
export class Service extends pulumi.ComponentResource {
  readonly serviceAccount: gcp.serviceaccount.Account;
  readonly secretAccess: readonly gcp.secretmanager.SecretIamMember[];
  readonly service: gcp.cloudrunv2.Service;
  readonly serviceName: pulumi.Output<string>;
  /** The run.app URL; closed to the internet by the ingress setting, open from the VPC. */
  readonly uri: pulumi.Output<string>;
  /** The plain (non-secret) environment the container gets. */
  readonly env: Readonly<Record<string, pulumi.Input<string>>>;

  constructor(name: string, args: ServiceArgs, opts?: pulumi.ComponentResourceOptions) {
    super("chat-gateway:infra:Service", name, {}, opts);
    const child = { parent: this, dependsOn: opts?.dependsOn };

    this.serviceAccount = new gcp.serviceaccount.Account(
      `${name}-sa`,
      {
        accountId: `${args.serviceId}-run`,
        displayName: "Chat gateway (Cloud Run runtime)",
        description: "Runs the chat gateway; reads its own secrets and nothing else",
      },
      child,
    );
    this.secretAccess = grantSecretAccess(name, args.secrets, this.serviceAccount, this);
    this.env = containerEnv(args);
    // The revision starts only after its secret versions and their grants exist (and whatever else it must wait for).
    const versions = args.secrets.flatMap((e) => (e.version ? [e.version] : []));
    this.service = createCloudRunService(name, args, {
      serviceAccount: this.serviceAccount,
      env: this.env,
      secretsRevision: secretsRevisionLabel(versions),
      opts: { parent: this, dependsOn: [...versions, ...this.secretAccess, ...(args.startAfter ?? [])] },
    });

    this.serviceName = this.service.name;
    this.uri = this.service.uri;
    this.registerOutputs({
      serviceName: this.serviceName,
      uri: this.uri,
      serviceAccountEmail: this.serviceAccount.email,
    });
  }
}

/** One grant per secret: no project-wide secretAccessor, nothing for other principals. */
function grantSecretAccess(
  name: string,
  secrets: readonly SecretEntry[],
  serviceAccount: gcp.serviceaccount.Account,
  parent: pulumi.Resource,
): gcp.secretmanager.SecretIamMember[] {
  const member = pulumi.interpolate`serviceAccount:${serviceAccount.email}`;
  return secrets.map(
    (entry) =>
      new gcp.secretmanager.SecretIamMember(
        `${name}-reads-${entry.spec.id}`,
        { secretId: entry.secret.id, role: "roles/secretmanager.secretAccessor", member },
        { parent },
      ),
  );
}

/**
 * The container's plain environment. Secrets are not in here: the gateway reads them from
 * Secret Manager itself (SECRETS_SOURCE=gcp), so they appear neither in the revision nor in
 * `gcloud run describe`.
 */
function containerEnv(args: ServiceArgs): Record<string, pulumi.Input<string>> {
  return {
    NODE_ENV: "production",
    SECRETS_SOURCE: "gcp",
    GCP_PROJECT: args.project,
    SERVICE_ID: args.serviceId,
    // REDIS_URL and REDIS_CLUSTER_NODES are mutually exclusive (service/src/config.ts).
    // A cluster authenticates its ACL user (infra/redisCluster.ts); an instance's AUTH string is the default user's.
    ...("url" in args.redis
      ? { REDIS_URL: args.redis.url }
      : { REDIS_CLUSTER_NODES: args.redis.clusterNodes, REDIS_TLS: "true", REDIS_USERNAME: args.redis.username }),
    SECRETS_PERMISSION_WAIT_SECONDS: String(SECRETS_PERMISSION_WAIT_SECONDS),
    ALLOWED_ORIGINS: args.allowedOrigins.join(","),
    MAX_CONNECTION_AGE_SECONDS: String(MAX_CONNECTION_AGE_SECONDS),
    SHUTDOWN_GRACE_MS: String(SHUTDOWN_GRACE_MS),
    METRICS_PORT: String(METRICS_PORT),
    TRUST_PROXY_HOPS: String(TRUST_PROXY_HOPS),
    LOG_LEVEL: args.logLevel,
    ...(args.jwtIssuer !== undefined ? { JWT_ISSUER: args.jwtIssuer } : {}),
    ...(args.jwtAudience !== undefined ? { JWT_AUDIENCE: args.jwtAudience } : {}),
    // Egress is PRIVATE_RANGES_ONLY: a public https URL is reached directly, a private address through the VPC.
    ...(args.agentWebhookUrl !== undefined ? { AGENT_WEBHOOK_URL: args.agentWebhookUrl } : {}),
  };
}

/**
 * A hash of the secret versions' names, as a revision label: a new secret version (a rotation,
 * a Redis CA change) changes it and so rolls a new revision, because the gateway reads its
 * secrets at startup only.
 */
function secretsRevisionLabel(versions: readonly gcp.secretmanager.SecretVersion[]): pulumi.Output<string> {
  return pulumi
    .all(versions.map((v) => v.name))
    .apply((names) => createHash("sha256").update(names.join("\n")).digest("hex").slice(0, 16));
}

interface CloudRunParts {
  readonly serviceAccount: gcp.serviceaccount.Account;
  readonly env: Readonly<Record<string, pulumi.Input<string>>>;
  readonly secretsRevision: pulumi.Output<string>;
  readonly opts: pulumi.CustomResourceOptions;
}

/** The Cloud Run service itself: ingress, WebSocket-shaped timeouts and scaling, Direct VPC egress. */
function createCloudRunService(name: string, args: ServiceArgs, parts: CloudRunParts): gcp.cloudrunv2.Service {
  return new gcp.cloudrunv2.Service(
    `${name}-run`,
    {
      name: args.serviceId,
      location: args.region,
      description: "Chat gateway: ticket-authenticated WebSockets for AI-agent chat",
      // Only the external load balancer (and the VPC) may call it.
      ingress: "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
      // The load balancer forwards browsers' unauthenticated requests, so the invoker
      // check is switched off. Cloud Run recommends this over an allUsers run.invoker
      // grant, which organisations with domain-restricted sharing refuse
      // (https://cloud.google.com/run/docs/authenticating/public#invoker_check);
      // the ingress setting keeps the run.app URL closed to the internet.
      invokerIamDisabled: true,
      deletionProtection: args.deletionProtection,
      template: {
        serviceAccount: parts.serviceAccount.email,
        // WebSockets live at most this long on Cloud Run; the gateway closes them
        // at MAX_CONNECTION_AGE_SECONDS (3300 s) with 4012 so clients reconnect cleanly.
        timeout: `${REQUEST_TIMEOUT_SECONDS}s`,
        // Best effort: a reconnecting browser usually lands on the instance that
        // still holds its state. Nothing relies on it (Redis is the source of truth).
        sessionAffinity: true,
        maxInstanceRequestConcurrency: args.concurrency,
        scaling: { minInstanceCount: args.minInstances, maxInstanceCount: args.maxInstances },
        executionEnvironment: "EXECUTION_ENVIRONMENT_GEN2",
        labels: { "secrets-revision": parts.secretsRevision },
        vpcAccess: {
          // Direct VPC egress: only private ranges (Memorystore) go through the VPC.
          networkInterfaces: [{ network: args.network, subnetwork: args.subnetwork }],
          egress: "PRIVATE_RANGES_ONLY",
        },
        containers: [gatewayContainer(args, parts.env)],
      },
    },
    parts.opts,
  );
}

/** The gateway's container: its image, resources, plain env and probes. */
function gatewayContainer(args: ServiceArgs, env: Readonly<Record<string, pulumi.Input<string>>>) {
  return {
    image: args.image,
    ports: { containerPort: CONTAINER_PORT, name: "http1" },
    resources: {
      limits: { cpu: args.cpu, memory: args.memory },
      // Sockets need CPU between requests: heartbeats, fan-out, session expiry.
      cpuIdle: false,
      startupCpuBoost: true,
    },
    envs: Object.entries(env).map(([envName, value]) => ({ name: envName, value })),
    // Ready means: secrets loaded, Redis and the bus reachable (docs/protocol.md §6).
    // Probes come from Cloud Run inside the instance, not through its front end,
    // so /readyz and /healthz reach the container here (the public checks use /ready, /health).
    // 120 × 2 s = 240 s: see STARTUP_PROBE.
    startupProbe: { httpGet: { path: "/readyz", port: CONTAINER_PORT }, ...STARTUP_PROBE },
    livenessProbe: {
      httpGet: { path: "/healthz", port: CONTAINER_PORT },
      periodSeconds: 15,
      timeoutSeconds: 3,
      failureThreshold: 3,
    },
  };
}
