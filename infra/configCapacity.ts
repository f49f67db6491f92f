/**
 * The capacity and network keys of the stack configuration: how many
 * instances of what size, how many sockets each holds, and whether the
 * subnets have the addresses that takes. Figures are Cloud Run's and
 * Memorystore's published limits, linked where they are used.
 */
import { CLOUD_RUN_MAX_CONCURRENCY, socketsPerInstance } from "./capacity.js";
import type { StackReaders } from "./configReaders.js";
import { CPU_LIMITS, type StackConfig } from "./configTypes.js";

export type CapacityStackConfig = Pick<StackConfig, "minInstances" | "maxInstances" | "concurrency" | "cpu" | "memory" | "subnetCidr">;

const MEMORY_LIMIT = /^(?:[1-9]\d{2,4}Mi|[1-9]\d?Gi)$/;
const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

export function readCapacityConfig(r: StackReaders): CapacityStackConfig {
  const { production, problems } = r;
  const minInstances = r.int("minInstances", production ? 1 : 0, 0, 100, "instances");
  const maxInstances = r.int("maxInstances", 10, 1, 1000, "instances");
  if (minInstances > maxInstances) problems.push(`minInstances (${minInstances}) must not exceed maxInstances (${maxInstances}), e.g. minInstances 1 with maxInstances 10`);
  if (production && minInstances < 1) {
    problems.push("minInstances must be at least 1 in a production stack (a cold start delays the first WebSocket upgrades by seconds)");
  }

  const cpu = r.oneOf("cpu", CPU_LIMITS, "1");
  const memory = r.matching("memory", r.str("memory") ?? "1Gi", MEMORY_LIMIT, "a Cloud Run memory limit like 512Mi or 2Gi");
  // Every open WebSocket is one concurrent request (infra/capacity.ts, docs/operations.md#capacity).
  const concurrency = r.int("concurrency", CLOUD_RUN_MAX_CONCURRENCY, 1, CLOUD_RUN_MAX_CONCURRENCY, "concurrent requests per instance; every open WebSocket counts as one");
  if (MEMORY_LIMIT.test(memory) && concurrency > socketsPerInstance(memory)) {
    problems.push(
      `concurrency (${concurrency}) is more sockets than memory ${memory} holds by the measured figures (${socketsPerInstance(memory)}, docs/operations.md#capacity); raise memory, e.g. 1Gi, or lower concurrency`,
    );
  }

  const subnetCidr = r.str("subnetCidr") ?? "10.8.0.0/24";
  const problem = subnetProblem(subnetCidr, maxInstances);
  if (problem !== undefined) problems.push(problem);
  return { minInstances, maxInstances, concurrency, cpu, memory, subnetCidr };
}

/** Why Direct VPC egress cannot use `subnetCidr` for `maxInstances`, or undefined. */
function subnetProblem(subnetCidr: string, maxInstances: number): string | undefined {
  const cidr = IPV4_CIDR.exec(subnetCidr);
  const prefix = cidr ? Number(cidr[5]) : NaN;
  if (!cidr || cidr.slice(1, 5).some((o) => Number(o) > 255)) return `subnetCidr must be an IPv4 CIDR range like 10.8.0.0/24; got "${subnetCidr}"`;
  // https://cloud.google.com/run/docs/configuring/vpc-direct-vpc#ip-address-allocation
  if (prefix < 16 || prefix > 26) return `subnetCidr must be a /16 to /26 range like 10.8.0.0/24 (Direct VPC egress needs at least a /26); got /${prefix}`;
  // Direct VPC egress uses up to two addresses per instance (during a revision rollout both
  // revisions hold addresses), and GCP reserves four per subnet.
  const usable = 2 ** (32 - prefix) - 4;
  if (maxInstances * 2 > usable) {
    return `maxInstances (${maxInstances}) needs ${maxInstances * 2} addresses for Direct VPC egress, but subnetCidr /${prefix} has ${usable}; use a larger range`;
  }
  return undefined;
}

/** A cluster's Private Service Connect range: /16 to /29, apart from the egress subnet. */
export function pscSubnetProblem(redisPscSubnetCidr: string, subnetCidr: string): string | undefined {
  const psc = IPV4_CIDR.exec(redisPscSubnetCidr);
  const pscPrefix = psc ? Number(psc[5]) : NaN;
  if (!psc || psc.slice(1, 5).some((o) => Number(o) > 255) || pscPrefix < 16 || pscPrefix > 29) {
    return `redisPscSubnetCidr must be an IPv4 CIDR range from /16 to /29 like 10.8.1.0/28; got "${redisPscSubnetCidr}"`;
  }
  if (IPV4_CIDR.test(subnetCidr) && rangesOverlap(subnetCidr, redisPscSubnetCidr)) {
    return `redisPscSubnetCidr (${redisPscSubnetCidr}) must not overlap subnetCidr (${subnetCidr})`;
  }
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
