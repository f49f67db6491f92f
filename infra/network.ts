import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";

export interface NetworkArgs {
  readonly region: string;
  /** The subnet Cloud Run's Direct VPC egress takes instance addresses from. */
  readonly subnetCidr: string;
  /** Prefix length of the range reserved for Google-managed services (Memorystore). */
  readonly privateServiceRangePrefix?: number;
  /**
   * Only for Memorystore for Redis Cluster: a subnet its Private Service Connect
   * endpoints (the discovery endpoint among them) take their addresses from.
   */
  readonly redisPscSubnetCidr?: string;
}

/**
 * A private VPC in which the gateway reaches Memorystore and nothing else:
 * one regional subnet for Cloud Run's Direct VPC egress (no connector VMs to
 * size or patch; https://cloud.google.com/run/docs/configuring/vpc-direct-vpc),
 * and a private services access range peered to Google's service network, so
 * the Redis instance gets a private address that only this VPC can route to.
 * Nothing in it has a public address and no firewall rule opens ingress.
 */
export class Network extends pulumi.ComponentResource {
  readonly network: gcp.compute.Network;
  readonly subnetwork: gcp.compute.Subnetwork;
  /** The range Memorystore allocates from (its name, for `reservedIpRange`). */
  readonly privateServiceRange: gcp.compute.GlobalAddress;
  /** The peering with servicenetworking; Redis must be created after it. */
  readonly privateServiceAccess: gcp.servicenetworking.Connection;
  /** Present with `redisPscSubnetCidr`: the subnet of the Redis Cluster's PSC endpoints. */
  readonly redisPscSubnetwork: gcp.compute.Subnetwork | undefined;

  constructor(name: string, args: NetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("chat-gateway:infra:Network", name, {}, opts);
    const child = { parent: this, dependsOn: opts?.dependsOn };

    this.network = new gcp.compute.Network(
      `${name}-vpc`,
      {
        autoCreateSubnetworks: false,
        routingMode: "REGIONAL",
        description: "Chat gateway: Cloud Run Direct VPC egress to Memorystore",
      },
      child,
    );
    this.subnetwork = createEgressSubnet(name, args, this.network, child);
    const access = createPrivateServiceAccess(name, args, this.network, child);
    this.privateServiceRange = access.range;
    this.privateServiceAccess = access.connection;
    this.redisPscSubnetwork =
      args.redisPscSubnetCidr === undefined ? undefined : createRedisPscSubnet(name, args.region, args.redisPscSubnetCidr, this.network, child);

    this.registerOutputs({
      network: this.network.id,
      subnetwork: this.subnetwork.id,
      privateServiceRange: this.privateServiceRange.name,
    });
  }
}

/** The subnet Cloud Run's instances take their addresses from (Direct VPC egress). */
function createEgressSubnet(name: string, args: NetworkArgs, network: gcp.compute.Network, opts: pulumi.CustomResourceOptions) {
  return new gcp.compute.Subnetwork(
    `${name}-run-egress`,
    {
      network: network.id,
      region: args.region,
      ipCidrRange: args.subnetCidr,
      // Egress is PRIVATE_RANGES_ONLY: calls to Google APIs (Secret Manager) leave
      // through Cloud Run's own path, but keep them private if that ever changes.
      privateIpGoogleAccess: true,
      description: "Addresses of Cloud Run instances (Direct VPC egress)",
    },
    opts,
  );
}

/** The range reserved for Google-managed services and its peering with servicenetworking (Memorystore instances). */
function createPrivateServiceAccess(name: string, args: NetworkArgs, network: gcp.compute.Network, opts: pulumi.CustomResourceOptions) {
  const range = new gcp.compute.GlobalAddress(
    `${name}-psa-range`,
    {
      network: network.id,
      purpose: "VPC_PEERING",
      addressType: "INTERNAL",
      prefixLength: args.privateServiceRangePrefix ?? 24,
      description: "Private services access range for Memorystore",
    },
    opts,
  );
  const connection = new gcp.servicenetworking.Connection(
    `${name}-psa`,
    {
      network: network.id,
      service: "servicenetworking.googleapis.com",
      reservedPeeringRanges: [range.name],
      // Deleting the peering fails while Google still holds the Redis tenant
      // resources; abandoning it lets `pulumi destroy` finish (the VPC goes anyway).
      deletionPolicy: "ABANDON",
    },
    opts,
  );
  return { range, connection };
}

/** The subnet of a Redis Cluster's Private Service Connect endpoints. */
function createRedisPscSubnet(name: string, region: string, cidr: string, network: gcp.compute.Network, opts: pulumi.CustomResourceOptions) {
  return new gcp.compute.Subnetwork(
    `${name}-redis-psc`,
    {
      network: network.id,
      region,
      ipCidrRange: cidr,
      description: "Private Service Connect endpoints of Memorystore for Redis Cluster",
    },
    opts,
  );
}
