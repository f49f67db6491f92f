import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { RedisTier } from "./configTypes.js";

export interface RedisArgs {
  readonly region: string;
  readonly tier: RedisTier;
  readonly memorySizeGb: number;
  readonly redisVersion: string;
  /** The VPC the instance is reachable from (its id). */
  readonly network: pulumi.Input<string>;
  /** The private services access range the instance takes its address from (its name). */
  readonly reservedIpRange: pulumi.Input<string>;
  /** The servicenetworking peering; the instance cannot be created before it. */
  readonly privateServiceAccess: pulumi.Resource;
  readonly deletionProtection: boolean;
}

/**
 * The gateway's ticket store, event history and cross-instance bus: a
 * Memorystore for Redis instance that only the gateway's VPC can reach, that
 * requires the AUTH string and speaks TLS only (port 6378, server
 * authentication), so neither a neighbour on the network nor a passive
 * observer can read or forge tickets. BASIC in staging; STANDARD_HA (a replica
 * in another zone with automatic failover) in production.
 *
 * `transitEncryptionMode` can only be chosen when the instance is created:
 * changing it later replaces the instance, which loses every ticket and the
 * event history (clients then get `resync_required`). Deletion protection
 * keeps that from happening by accident in production.
 */
export class Redis extends pulumi.ComponentResource {
  readonly instance: gcp.redis.Instance;
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  /** `rediss://host:port`: TLS, and no password in it (the AUTH string is a secret of its own). */
  readonly url: pulumi.Output<string>;
  /** The AUTH string (a Pulumi secret). */
  readonly authString: pulumi.Output<string>;
  /** PEM of the server CA(s) to trust. During a CA rotation Memorystore lists two; all are included. */
  readonly caCertificates: pulumi.Output<string>;

  constructor(name: string, args: RedisArgs, opts?: pulumi.ComponentResourceOptions) {
    super("chat-gateway:infra:Redis", name, {}, opts);

    this.instance = new gcp.redis.Instance(
      `${name}-redis`,
      {
        region: args.region,
        tier: args.tier,
        memorySizeGb: args.memorySizeGb,
        redisVersion: args.redisVersion,
        authorizedNetwork: args.network,
        connectMode: "PRIVATE_SERVICE_ACCESS",
        reservedIpRange: args.reservedIpRange,
        authEnabled: true,
        // Chosen at creation only (see above). Clients connect with TLS on port 6378.
        transitEncryptionMode: "SERVER_AUTHENTICATION",
        deletionProtection: args.deletionProtection,
        displayName: "Chat gateway tickets, history and bus",
        // Failover and maintenance are announced by a short disconnect; ioredis reconnects.
        maintenancePolicy: {
          weeklyMaintenanceWindows: [{ day: "TUESDAY", startTime: { hours: 3, minutes: 0, seconds: 0, nanos: 0 } }],
        },
      },
      { parent: this, dependsOn: [args.privateServiceAccess] },
    );

    this.host = this.instance.host;
    this.port = this.instance.port;
    this.url = pulumi.interpolate`rediss://${this.instance.host}:${this.instance.port}`;
    this.authString = pulumi.secret(this.instance.authString);
    this.caCertificates = this.instance.serverCaCerts.apply((certs) => {
      const pems = certs.map((c) => c.cert.trim()).filter((c) => c !== "");
      return pems.length === 0 ? "" : `${pems.join("\n")}\n`;
    });

    this.registerOutputs({ host: this.host, port: this.port, url: this.url });
  }
}
