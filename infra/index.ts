/**
 * The chat gateway on Google Cloud: Cloud Run behind a global external
 * Application Load Balancer, Memorystore for Redis over Direct VPC egress,
 * secrets in Secret Manager, and the alerts and dashboard on-call uses
 * (docs/operations.md). This file only reads the configuration and wires the
 * components together; each component says what it guarantees.
 */
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { Apis, REDIS_CLUSTER_APIS, REQUIRED_APIS } from "./apis.js";
import { loadStackConfig } from "./config.js";
import { LoadBalancer } from "./loadBalancer.js";
import { Monitoring } from "./monitoring.js";
import { Network } from "./network.js";
import { Redis } from "./redis.js";
import { RedisCluster } from "./redisCluster.js";
import { Secrets } from "./secrets.js";
import { Service } from "./service.js";

// Throws one error naming every bad or missing key before anything is registered.
const { config: cfg, secrets: secretConfig } = loadStackConfig();
const id = cfg.serviceId;

// Every resource goes through this provider, so the stack's project and region
// come from its own config, never from whatever gcloud happens to point at.
const gcpProvider = new gcp.Provider("gcp", {
  project: cfg.project,
  region: cfg.region,
  defaultLabels: { service: id, stack: cfg.stack, managed_by: "pulumi" },
});
const opts = (...dependsOn: pulumi.Resource[]): pulumi.ComponentResourceOptions => ({ providers: [gcpProvider], dependsOn });

const cluster = cfg.redisMode === "cluster";
const apis = new Apis(
  id,
  { project: cfg.project, services: cluster ? [...REQUIRED_APIS, ...REDIS_CLUSTER_APIS] : REQUIRED_APIS },
  { providers: [gcpProvider] },
);

const network = new Network(
  id,
  { region: cfg.region, subnetCidr: cfg.subnetCidr, ...(cluster ? { redisPscSubnetCidr: cfg.redisPscSubnetCidr } : {}) },
  opts(apis),
);

// One Memorystore instance (REDIS_URL) or a Memorystore for Redis Cluster (REDIS_CLUSTER_NODES).
const redis = cluster
  ? new RedisCluster(
      id,
      {
        region: cfg.region,
        shardCount: cfg.redisShardCount,
        replicaCount: cfg.redisReplicaCount,
        nodeType: cfg.redisNodeType,
        network: network.network.id,
        pscSubnetwork: network.redisPscSubnetwork!.id,
        deletionProtection: cfg.deletionProtection,
        username: id,
        passwordGeneration: cfg.redisPasswordGeneration,
        previousPasswordGeneration: cfg.redisPreviousPasswordGeneration,
      },
      opts(apis),
    )
  : new Redis(
      id,
      {
        region: cfg.region,
        tier: cfg.redisTier,
        memorySizeGb: cfg.redisSizeGb,
        redisVersion: cfg.redisVersion,
        network: network.network.id,
        reservedIpRange: network.privateServiceRange.name,
        privateServiceAccess: network.privateServiceAccess,
        deletionProtection: cfg.deletionProtection,
      },
      opts(apis),
    );

// The agent webhook's key is shared with the agent backend: set it with
// `pulumi config set --secret agentWebhookSecret whsec_…`, or let the program
// generate one (read it from Secret Manager for the backend).
const agentWebhookSecret =
  cfg.agentWebhookUrl === undefined
    ? undefined
    : (secretConfig.agentWebhookSecret ?? pulumi.secret(pulumi.interpolate`whsec_${new random.RandomBytes(`${id}-agent-webhook-key`, { length: 32 }).base64}`));

const secrets = new Secrets(
  id,
  {
    serviceId: id,
    values: {
      "jwt-secret-key": secretConfig.jwtSecretKey,
      "jwt-secret-key-previous": secretConfig.jwtSecretKeyPrevious,
      // Unset: generated (the `generate` list below); set during and after a rotation.
      "service-secret": secretConfig.serviceSecret,
      "service-secret-previous": secretConfig.serviceSecretPrevious,
      // An instance's AUTH string, or the password of the cluster's ACL user (infra/redisCluster.ts).
      "redis-auth-string": redis instanceof Redis ? redis.authString : redis.password,
      "redis-tls-ca": redis.caCertificates,
      "agent-webhook-secret": agentWebhookSecret,
    },
    generate: ["service-secret"],
    deletionProtection: cfg.deletionProtection,
  },
  // A new cluster password becomes the secret's latest version only once the ACL policy accepts it:
  // an instance that starts in between (a scale-out of the old revision) reads it.
  opts(apis, ...(redis instanceof RedisCluster ? [redis.aclPolicy] : [])),
);

const service = new Service(
  id,
  {
    project: cfg.project,
    region: cfg.region,
    serviceId: id,
    image: cfg.image,
    network: network.network.id,
    subnetwork: network.subnetwork.id,
    redis: redis instanceof Redis ? { url: redis.url } : { clusterNodes: redis.nodes, username: redis.username },
    allowedOrigins: cfg.allowedOrigins,
    secrets: secrets.entries,
    minInstances: cfg.minInstances,
    maxInstances: cfg.maxInstances,
    concurrency: cfg.concurrency,
    cpu: cfg.cpu,
    memory: cfg.memory,
    logLevel: cfg.logLevel,
    jwtIssuer: cfg.jwtIssuer,
    jwtAudience: cfg.jwtAudience,
    agentWebhookUrl: cfg.agentWebhookUrl,
    deletionProtection: cfg.deletionProtection,
    // A revision that authenticates with a new password starts only once the cluster accepts it.
    startAfter: redis instanceof RedisCluster ? [redis.aclPolicy] : [],
  },
  opts(apis),
);

const lb = new LoadBalancer(
  id,
  {
    region: cfg.region,
    cloudRunService: service.serviceName,
    domain: cfg.domain,
    ticketRateLimitPerMinute: cfg.ticketEdgeRateLimitPerMinute,
  },
  opts(apis),
);

new Monitoring(
  id,
  {
    project: cfg.project,
    serviceId: id,
    serviceName: service.serviceName,
    domain: cfg.domain,
    alertEmails: cfg.alertEmails,
    runbookBaseUrl: cfg.runbookBaseUrl,
    thresholds: cfg.alerts,
  },
  opts(apis),
);

/** Point the domain's A record here (docs/operations.md#deploying). */
export const loadBalancerIp = lb.ipAddress;
export const url = lb.url;
export const serviceName = service.serviceName;
/** The run.app URL: reachable from the VPC only (agent backends call /internal/ here). */
export const serviceUri = service.uri;
export const redisHost = redis.host;
export const secretIds = secrets.secretIds;
