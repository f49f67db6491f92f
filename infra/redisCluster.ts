import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { gatewayAclRule } from "../service/src/plugins/store/acl.js";
import type { RedisClusterNodeType } from "./configTypes.js";

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
  /** The ACL user the gateway authenticates as (REDIS_USERNAME). */
  readonly username: string;
  /**
   * The generation of the gateway's password: raising it makes a new one
   * (a rotation). `previousPasswordGeneration`, while set, keeps that older
   * generation's password accepted too, so running instances and their
   * reconnects keep working until the new revision has replaced them.
   */
  readonly passwordGeneration: number;
  readonly previousPasswordGeneration?: number | undefined;
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
 * Authentication: an ACL policy (https://cloud.google.com/memorystore/docs/cluster/use-acl-policies)
 * with one user, the gateway's, whose password the program generates and
 * stores as the `redis-auth-string` secret (REDIS_PASSWORD; REDIS_USERNAME is
 * plain config). A static password fits the gateway, which reads its secrets
 * once at startup; IAM authentication (AUTH_MODE_IAM_AUTH) would need an
 * access token refreshed hourly on every connection. A Redis user holds
 * several passwords at once, so a rotation accepts the old and the new one
 * until the old revision is gone (docs/operations.md#rotate-the-redis-password-redis_password).
 * The user's permissions are the gateway's own rule
 * (service/src/plugins/store/acl.ts), which the store contract suite runs under.
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
  readonly aclPolicy: gcp.redis.ClusterAclPolicy;
  /** The gateway's current password (a Pulumi secret): the `redis-auth-string` secret's value. */
  readonly password: pulumi.Output<string>;
  readonly username: string;

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

    const passwords = createPasswords(name, args, this);
    this.username = args.username;
    this.password = pulumi.secret(passwords[0]!);
    this.aclPolicy = new gcp.redis.ClusterAclPolicy(
      `${name}-redis-acl`,
      {
        aclPolicyId: `${args.username}-acl`,
        location: args.region,
        rules: [{ username: args.username, rule: pulumi.secret(pulumi.all(passwords).apply((p) => gatewayAclRule(p))) }],
      },
      child,
    );

    this.cluster = createCluster(name, args, this.aclPolicy, { parent: this, dependsOn: [this.connectionPolicy, this.aclPolicy] });

    const endpoint = discoveryEndpoint(this.cluster);
    this.host = endpoint.address;
    this.port = endpoint.port;
    this.nodes = pulumi.interpolate`${endpoint.address}:${endpoint.port}`;
    this.caCertificates = caCertificatesPem(this.cluster);

    this.registerOutputs({ host: this.host, port: this.port, nodes: this.nodes });
  }
}

/**
 * One password per generation, the current one first; the resource name carries the
 * generation, so an older generation's password survives while previousPasswordGeneration names it.
 */
function createPasswords(name: string, args: RedisClusterArgs, parent: pulumi.Resource): pulumi.Output<string>[] {
  const generations = [args.passwordGeneration, ...(args.previousPasswordGeneration === undefined ? [] : [args.previousPasswordGeneration])];
  return generations.map(
    (generation) => new random.RandomPassword(`${name}-redis-password-g${generation}`, { length: 48, special: false }, { parent }).result,
  );
}

/** The cluster: its shape, PSC networking, ACL authentication, TLS, eviction and maintenance window. */
function createCluster(
  name: string,
  args: RedisClusterArgs,
  aclPolicy: gcp.redis.ClusterAclPolicy,
  opts: pulumi.CustomResourceOptions,
): gcp.redis.Cluster {
  return new gcp.redis.Cluster(
    `${name}-redis`,
    {
      region: args.region,
      shardCount: args.shardCount,
      replicaCount: args.replicaCount,
      nodeType: args.nodeType,
      pscConfigs: [{ network: args.network }],
      // No IAM authentication: the ACL policy's user and password authenticate (see RedisCluster).
      authorizationMode: "AUTH_MODE_DISABLED",
      aclPolicy: aclPolicy.name,
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
    opts,
  );
}

/** The first discovery endpoint Memorystore reports (address and port). */
function discoveryEndpoint(cluster: gcp.redis.Cluster) {
  return cluster.discoveryEndpoints.apply((endpoints) => {
    const first = endpoints.find((e) => e.address !== undefined && e.address !== "");
    if (!first) throw new Error("RedisCluster: Memorystore reported no discovery endpoint");
    return { address: first.address!, port: first.port ?? 6379 };
  });
}

/** PEM of every CA certificate the managed server CA lists, one after another ("" if none). */
function caCertificatesPem(cluster: gcp.redis.Cluster): pulumi.Output<string> {
  return cluster.managedServerCas.apply((cas) => {
    const pems = (cas ?? [])
      .flatMap((ca) => ca.caCerts ?? [])
      .flatMap((c) => c.certificates ?? [])
      .map((c) => c.trim())
      .filter((c) => c !== "");
    return pems.length === 0 ? "" : `${pems.join("\n")}\n`;
  });
}
