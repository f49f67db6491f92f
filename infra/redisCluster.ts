import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { RedisClusterNodeType } from "./config.js";

export interface RedisClusterArgs {
  readonly region: string;
  /** Primaries, 1..250 (checked in infra/config.ts). */
  readonly shardCount: number;
  /** Replicas per shard, 0..2. */
  readonly replicaCount: number;
  readonly nodeType: RedisClusterNodeType;
  /** The VPC the cluster's Private Service Connect endpoints live in (its id). */
  readonly network: pulumi.Input<string>;
  /** The subnet those endpoints take their addresses from (its id). */
  readonly pscSubnetwork: pulumi.Input<string>;
  readonly deletionProtection: boolean;
}

/**
 * The gateway's ticket store, event history and cross-instance bus on
 * Memorystore for Redis Cluster (Redis 7.x, so sharded pub/sub is there):
 * `shardCount` primaries with `replicaCount` replicas each, spread over zones,
 * reachable only through Private Service Connect endpoints in the gateway's
 * VPC, which a service connection policy (service class
 * `gcp-memorystore-redis`) lets Memorystore create in a subnet of their own.
 * In-transit encryption is on (server authentication, the cluster's managed
 * CA); like the instance's, it is chosen at creation only.
 *
 * Authentication: AUTH_MODE_DISABLED, deliberately. Memorystore for Redis
 * Cluster has no static AUTH string: it offers IAM authentication (a
 * short-lived OAuth access token as the AUTH password, to be refreshed before
 * it expires, hourly) or none. The gateway authenticates with a static
 * password read once at startup (REDIS_PASSWORD), so IAM auth would fail its
 * connections within the hour; it needs token support in the gateway first.
 * Until then the cluster relies on network isolation (PSC endpoints exist only
 * in this VPC, which has no ingress and holds only the gateway's Cloud Run
 * instances) plus TLS. The service still requires a `redis-auth-string`
 * secret version (service/src/secretNames.ts marks REDIS_PASSWORD required),
 * so the program stores a generated value there that the cluster ignores:
 * ioredis sends AUTH with it and treats "no password configured" as a warning
 * (docs/operations.md#redis-cluster).
 */
export class RedisCluster extends pulumi.ComponentResource {
  readonly connectionPolicy: gcp.networkconnectivity.ServiceConnectionPolicy;
  readonly cluster: gcp.redis.Cluster;
  /** The discovery endpoint's address. */
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  /** `host:port` of the discovery endpoint: REDIS_CLUSTER_NODES. */
  readonly nodes: pulumi.Output<string>;
  /** PEM of every CA certificate the cluster's managed server CA lists (several during a CA rotation). */
  readonly caCertificates: pulumi.Output<string>;

  constructor(name: string, args: RedisClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("chat-gateway:infra:RedisCluster", name, {}, opts);
    const child = { parent: this, dependsOn: opts?.dependsOn };

    // One policy per VPC, region and service class: it lets Memorystore create
    // the cluster's PSC endpoints (forwarding rules) in the given subnet.
    this.connectionPolicy = new gcp.networkconnectivity.ServiceConnectionPolicy(
      `${name}-redis-scp`,
      {
        location: args.region,
        serviceClass: "gcp-memorystore-redis",
        network: args.network,
        pscConfig: { subnetworks: [args.pscSubnetwork] },
        description: "Lets Memorystore for Redis Cluster create the chat gateway's PSC endpoints",
      },
      child,
    );

    this.cluster = new gcp.redis.Cluster(
      `${name}-redis`,
      {
        region: args.region,
        shardCount: args.shardCount,
        replicaCount: args.replicaCount,
        nodeType: args.nodeType,
        pscConfigs: [{ network: args.network }],
        // No static AUTH string exists for clusters; IAM auth needs gateway support (see above).
        authorizationMode: "AUTH_MODE_DISABLED",
        // Chosen at creation only. Clients connect with TLS and trust managedServerCas.
        transitEncryptionMode: "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION",
        zoneDistributionConfig: { mode: "MULTI_ZONE" },
        deletionProtectionEnabled: args.deletionProtection,
        // Tickets and history carry TTLs; under memory pressure evict those nearest expiry.
        redisConfigs: { "maxmemory-policy": "volatile-ttl" },
        // A failover or an update moves slots: the gateway's clients see MOVED and one resync.
        maintenancePolicy: {
          weeklyMaintenanceWindows: [{ day: "TUESDAY", startTime: { hours: 3, minutes: 0, seconds: 0, nanos: 0 } }],
        },
      },
      { parent: this, dependsOn: [this.connectionPolicy] },
    );

    const endpoint = this.cluster.discoveryEndpoints.apply((endpoints) => {
      const first = endpoints.find((e) => e.address !== undefined && e.address !== "");
      if (!first) throw new Error("RedisCluster: Memorystore reported no discovery endpoint");
      return { address: first.address!, port: first.port ?? 6379 };
    });
    this.host = endpoint.address;
    this.port = endpoint.port;
    this.nodes = pulumi.interpolate`${endpoint.address}:${endpoint.port}`;
    this.caCertificates = this.cluster.managedServerCas.apply((cas) => {
      const pems = (cas ?? [])
        .flatMap((ca) => ca.caCerts ?? [])
        .flatMap((c) => c.certificates ?? [])
        .map((c) => c.trim())
        .filter((c) => c !== "");
      return pems.length === 0 ? "" : `${pems.join("\n")}\n`;
    });

    this.registerOutputs({ host: this.host, port: this.port, nodes: this.nodes });
  }
}
