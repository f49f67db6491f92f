import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";

/**
 * The Google APIs the program creates resources through. Direct VPC egress
 * needs no Serverless VPC Access connector, so `vpcaccess.googleapis.com` is
 * not among them.
 */
export const REQUIRED_APIS = [
  "compute.googleapis.com",
  "iam.googleapis.com",
  "logging.googleapis.com",
  "monitoring.googleapis.com",
  "redis.googleapis.com",
  "run.googleapis.com",
  "secretmanager.googleapis.com",
  "servicenetworking.googleapis.com",
] as const;

/**
 * Only with Memorystore for Redis Cluster: its Private Service Connect
 * endpoints are created through a service connection policy
 * (networkconnectivity), and that automation provisions them through the
 * Service Consumer Management API, which Memorystore lists among the APIs to
 * enable before creating a cluster
 * (https://cloud.google.com/memorystore/docs/cluster/instance-provisioning-vpc and
 * https://cloud.google.com/memorystore/docs/cluster/use-acl-policies, "Before you begin").
 */
export const REDIS_CLUSTER_APIS = ["networkconnectivity.googleapis.com", "serviceconsumermanagement.googleapis.com"] as const;

export interface ApisArgs {
  readonly project: string;
  readonly services?: readonly string[];
}

/**
 * Enables every API the program needs, and only those, and leaves them enabled
 * when the stack is destroyed (the project may hold other workloads, and
 * disabling an API destroys its resources). Every other component is created
 * with `dependsOn: [apis]`, so no resource is created before its API answers.
 */
export class Apis extends pulumi.ComponentResource {
  readonly services: readonly gcp.projects.Service[];

  constructor(name: string, args: ApisArgs, opts?: pulumi.ComponentResourceOptions) {
    super("chat-gateway:infra:Apis", name, {}, opts);
    this.services = (args.services ?? REQUIRED_APIS).map(
      (service) =>
        new gcp.projects.Service(
          `${name}-${service.split(".")[0]}`,
          { project: args.project, service, disableOnDestroy: false, disableDependentServices: false },
          { parent: this },
        ),
    );
    this.registerOutputs({ services: this.services.map((s) => s.service) });
  }
}
