/**
 * Runs the Pulumi program (infra/index.ts) against Pulumi's mocks with the
 * configuration of a real stack file, and collects every resource it
 * registers, so the tests can assert rules over the whole stack.
 *
 * Order matters: the config and `setMocks` come first, then a *dynamic*
 * import of the program (a static import would run it before the mocks exist),
 * and `vi.resetModules()` before each run so the program runs again.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { fileURLToPath } from "node:url";
import * as pulumi from "@pulumi/pulumi";
import { vi } from "vitest";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const PROJECT = "chat-gateway";
export const STACKS = ["staging", "production"] as const;
export type StackName = (typeof STACKS)[number];


export function readYaml(relativePath: string): unknown {
  return yaml.load(readFileSync(new URL(relativePath, `file://${ROOT}`), "utf8"));
}

/** The `config:` map of Pulumi.<stack>.yaml, as written. */
export function stackFile(stack: StackName): Record<string, unknown> {
  const doc = readYaml(`Pulumi.${stack}.yaml`) as { config?: Record<string, unknown> } | null;
  return doc?.config ?? {};
}

/** A secret the stack files cannot hold (it comes from `pulumi config set --secret`). */
export const TEST_JWT_SECRET = "test-only-jwt-secret-key-0123456789abcdef";
export const TEST_CA =
  "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUTESTONLYTESTONLYTESTONLYTESTONLYwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----";
export const TEST_REDIS_HOST = "10.9.0.3";
/** The discovery endpoint the mocks give a Memorystore for Redis Cluster (an address in its PSC subnet). */
export const TEST_REDIS_CLUSTER_HOST = "10.8.1.2";
export const TEST_CLUSTER_CA =
  "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUCLUSTERTESTONLYCLUSTERTESTONLYwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----";
export const TEST_LB_IP = "203.0.113.7";

/**
 * The configuration Pulumi would hand the program for a stack: every key of
 * the stack file (lists as JSON, like the CLI does), plus the secrets set with
 * `pulumi config set --secret`. `overrides` replace keys (undefined removes one).
 */
export function stackConfig(stack: StackName, overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const config: Record<string, string> = {};
  for (const [key, value] of Object.entries(stackFile(stack))) {
    config[key] = typeof value === "string" ? value : typeof value === "object" ? JSON.stringify(value) : String(value);
  }
  config[`${PROJECT}:jwtSecretKey`] = TEST_JWT_SECRET;
  for (const [key, value] of Object.entries(overrides)) {
    const full = key.includes(":") ? key : `${PROJECT}:${key}`;
    if (value === undefined) delete config[full];
    else config[full] = value;
  }
  return config;
}

/** Overrides that switch production's stack file (a Redis Cluster) back to one STANDARD_HA instance. */
export const INSTANCE_SHAPE: Readonly<Record<string, string | undefined>> = {
  redisMode: "instance",
  redisTier: "STANDARD_HA",
  redisSizeGb: "5",
  redisShardCount: undefined,
  redisReplicaCount: undefined,
  redisNodeType: undefined,
  redisPscSubnetCidr: undefined,
};

export interface Registered {
  readonly type: string;
  readonly name: string;
  /** The inputs the program gave, with Outputs resolved. */
  readonly inputs: Record<string, any>;
  readonly state: Record<string, any>;
  readonly provider: string | undefined;
  readonly urn: string;
  readonly parent: string;
  /** URNs this resource waits for (explicit dependsOn and its inputs' resources). */
  readonly dependencies: readonly string[];
}

export interface ProgramRun {
  readonly stack: StackName;
  readonly config: Readonly<Record<string, string>>;
  readonly resources: readonly Registered[];
  readonly outputs: Readonly<Record<string, unknown>>;
  ofType(type: string): Registered[];
  /** The one resource of a type; fails if there are none or several. */
  one(type: string): Registered;
  /** Every URN the resource waits for, directly or through others. */
  dependsOnTransitively(resource: Registered): Set<string>;
}

/** What GCP would compute for each kind of resource, enough for the program's outputs to resolve. */
function computed(type: string, name: string, inputs: Record<string, any>, project: string): Record<string, any> {
  const selfLink = (kind: string) => `https://www.googleapis.com/compute/v1/projects/${project}/global/${kind}/${name}`;
  switch (type) {
    case "gcp:redis/instance:Instance":
      return {
        host: TEST_REDIS_HOST,
        // Memorystore listens on 6378 with in-transit encryption, 6379 without.
        port: inputs.transitEncryptionMode === "SERVER_AUTHENTICATION" ? 6378 : 6379,
        authString: "test-redis-auth-string-0123456789abcdef",
        serverCaCerts: [{ cert: TEST_CA, createTime: "", expireTime: "", serialNumber: "1", sha1Fingerprint: "x" }],
      };
    case "gcp:redis/cluster:Cluster":
      return {
        // Memorystore for Redis Cluster listens on 6379, with or without in-transit encryption.
        discoveryEndpoints: [{ address: TEST_REDIS_CLUSTER_HOST, port: 6379, pscConfig: { network: inputs.pscConfigs?.[0]?.network } }],
        managedServerCas: [{ caCerts: [{ certificates: [TEST_CLUSTER_CA] }] }],
      };
    case "gcp:compute/globalAddress:GlobalAddress":
      return { address: inputs.purpose === "VPC_PEERING" ? "10.9.0.0" : TEST_LB_IP, name, selfLink: selfLink("addresses") };
    case "gcp:cloudrunv2/service:Service":
      return { uri: `https://${inputs.name}-abc123-ew.a.run.app` };
    case "gcp:serviceaccount/account:Account":
      return { email: `${inputs.accountId}@${project}.iam.gserviceaccount.com` };
    case "gcp:secretmanager/secret:Secret":
      return { name: `projects/${project}/secrets/${inputs.secretId}` };
    case "gcp:secretmanager/secretVersion:SecretVersion":
      return { name: `${inputs.secret}/versions/1`, version: "1" };
    case "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig":
      return { uptimeCheckId: `${name}-check-id`, name: `projects/${project}/uptimeCheckConfigs/${name}-check-id` };
    case "gcp:monitoring/notificationChannel:NotificationChannel":
      return { name: `projects/${project}/notificationChannels/${name}` };
    case "gcp:monitoring/alertPolicy:AlertPolicy":
      return { name: `projects/${project}/alertPolicies/${name}` };
    case "gcp:redis/clusterAclPolicy:ClusterAclPolicy":
      return { name: `projects/${project}/locations/${inputs.location}/aclPolicies/${inputs.aclPolicyId}` };
    case "random:index/randomPassword:RandomPassword":
      // Distinct per resource, so two generations of a password differ as they would.
      return { result: createHash("sha256").update(name).digest("hex").repeat(4).slice(0, Number(inputs.length ?? 16)) };
    case "random:index/randomBytes:RandomBytes":
      return { base64: Buffer.alloc(Number(inputs.length ?? 32), 0x61).toString("base64") };
    default:
      return type.startsWith("gcp:compute/") ? { name: inputs.name ?? name, selfLink: selfLink(type.split(":")[2] ?? "x") } : {};
  }
}

function idOf(type: string, name: string, state: Record<string, any>, project: string): string {
  if (type === "gcp:secretmanager/secret:Secret") return String(state.name);
  if (type === "gcp:compute/network:Network") return `projects/${project}/global/networks/${name}`;
  if (type === "gcp:compute/subnetwork:Subnetwork") return `projects/${project}/regions/r/subnetworks/${name}`;
  return `${name}-id`;
}

/** Waits until an output resolves (secret or not). */
export function resolve<T>(value: pulumi.Input<T> | undefined): Promise<T | undefined> {
  return new Promise((done) => pulumi.output(value).apply((v) => void done(v as T | undefined)));
}

/**
 * Runs infra/index.ts for a stack under mocks and returns what it registered.
 * Rejects with the program's error (e.g. a StackConfigError).
 */
export async function runProgram(stack: StackName, overrides: Record<string, string | undefined> = {}): Promise<ProgramRun> {
  const config = stackConfig(stack, overrides);
  const project = config[`${PROJECT}:project`] ?? "unknown-project";
  const registered: Omit<Registered, "urn" | "parent" | "dependencies">[] = [];
  const graph = new Map<string, { urn: string; parent: string; dependencies: string[] }>();

  vi.resetModules();
  pulumi.runtime.setAllConfig(config, [`${PROJECT}:jwtSecretKey`, `${PROJECT}:jwtSecretKeyPrevious`, `${PROJECT}:serviceSecret`, `${PROJECT}:serviceSecretPrevious`]);
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const state = { ...args.inputs, ...computed(args.type, args.name, args.inputs, project) };
        registered.push({ type: args.type, name: args.name, inputs: args.inputs, state, provider: args.provider });
        return { id: idOf(args.type, args.name, state, project), state };
      },
      call(args) {
        return args.inputs;
      },
    },
    PROJECT,
    stack,
    false,
  );

  // Record each registration's URN, parent and dependencies (the mocks' newResource does not see them).
  type Callback = (err: unknown, res: { getUrn(): string } | undefined) => void;
  type Request = { getType(): string; getName(): string; getParent(): string; getDependenciesList(): string[] };
  const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: Request, cb: Callback): unknown };
  const registerResource = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) =>
    registerResource(req, (err, res) => {
      if (res) graph.set(`${req.getType()}::${req.getName()}`, { urn: res.getUrn(), parent: req.getParent(), dependencies: req.getDependenciesList() });
      cb(err, res);
    });

  const program = (await import("../../infra/index.js")) as Record<string, unknown>;
  const outputs: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(program)) outputs[key] = await resolve(value as pulumi.Input<unknown>);

  // Registrations finish asynchronously; wait until no new one arrives for a while.
  let seen = -1;
  let quiet = 0;
  while (quiet < 5) {
    await new Promise((r) => setTimeout(r, 10));
    if (registered.length === seen && graph.size === seen) quiet++;
    else {
      seen = registered.length;
      quiet = 0;
    }
  }

  const resources: Registered[] = registered.map((r) => {
    const node = graph.get(`${r.type}::${r.name}`);
    if (!node) throw new Error(`no registration recorded for ${r.type} ${r.name}`);
    return { ...r, ...node };
  });
  const byUrn = new Map(resources.map((r) => [r.urn, r]));
  const ofType = (type: string) => resources.filter((r) => r.type === type);
  return {
    stack,
    config,
    resources,
    outputs,
    ofType,
    dependsOnTransitively(resource) {
      const seenUrns = new Set<string>();
      const stackUrns = [...resource.dependencies];
      while (stackUrns.length > 0) {
        const urn = stackUrns.pop()!;
        if (seenUrns.has(urn)) continue;
        seenUrns.add(urn);
        stackUrns.push(...(byUrn.get(urn)?.dependencies ?? []));
      }
      return seenUrns;
    },
    one(type) {
      const found = ofType(type);
      if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
      return found[0]!;
    },
  };
}

/** Runs each stack once per test file (programs are slow to load, not to run). */
export function cachedRuns(): (stack: StackName) => Promise<ProgramRun> {
  const runs = new Map<StackName, Promise<ProgramRun>>();
  return (stack) => {
    let run = runs.get(stack);
    if (!run) {
      // One program at a time: the mocks and config are process-global.
      const previous = Promise.all(runs.values()).catch(() => undefined);
      run = previous.then(() => runProgram(stack));
      runs.set(stack, run);
    }
    return run;
  };
}

export const T = {
  provider: "pulumi:providers:gcp",
  service: "gcp:projects/service:Service",
  network: "gcp:compute/network:Network",
  subnetwork: "gcp:compute/subnetwork:Subnetwork",
  globalAddress: "gcp:compute/globalAddress:GlobalAddress",
  psa: "gcp:servicenetworking/connection:Connection",
  redis: "gcp:redis/instance:Instance",
  redisCluster: "gcp:redis/cluster:Cluster",
  redisAclPolicy: "gcp:redis/clusterAclPolicy:ClusterAclPolicy",
  metricVisible: "pulumi-nodejs:dynamic/chat-gateway:MetricVisible",
  serviceConnectionPolicy: "gcp:networkconnectivity/serviceConnectionPolicy:ServiceConnectionPolicy",
  secret: "gcp:secretmanager/secret:Secret",
  secretVersion: "gcp:secretmanager/secretVersion:SecretVersion",
  secretIam: "gcp:secretmanager/secretIamMember:SecretIamMember",
  serviceAccount: "gcp:serviceaccount/account:Account",
  run: "gcp:cloudrunv2/service:Service",
  runIam: "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
  neg: "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup",
  backend: "gcp:compute/backendService:BackendService",
  urlMap: "gcp:compute/uRLMap:URLMap",
  cert: "gcp:compute/managedSslCertificate:ManagedSslCertificate",
  httpsProxy: "gcp:compute/targetHttpsProxy:TargetHttpsProxy",
  httpProxy: "gcp:compute/targetHttpProxy:TargetHttpProxy",
  forwardingRule: "gcp:compute/globalForwardingRule:GlobalForwardingRule",
  armor: "gcp:compute/securityPolicy:SecurityPolicy",
  logMetric: "gcp:logging/metric:Metric",
  alert: "gcp:monitoring/alertPolicy:AlertPolicy",
  channel: "gcp:monitoring/notificationChannel:NotificationChannel",
  uptime: "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig",
  dashboard: "gcp:monitoring/dashboard:Dashboard",
  password: "random:index/randomPassword:RandomPassword",
  bytes: "random:index/randomBytes:RandomBytes",
} as const;

/** The plain env of the Cloud Run container, by name. */
export function containerEnv(run: ProgramRun): Record<string, string | undefined> {
  const svc = run.one(T.run);
  const envs = (svc.inputs.template?.containers?.[0]?.envs ?? []) as { name: string; value?: string; valueSource?: unknown }[];
  return Object.fromEntries(envs.map((e) => [e.name, e.value]));
}

/** True for a value the program marked secret (as the mocks see it). */
export function isSecretValue(value: unknown): boolean {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<string, unknown>)[pulumi.runtime.specialSigKey] === pulumi.runtime.specialSecretSig
  );
}

/** A value with any secret wrapper removed. */
export function plain<T = unknown>(value: unknown): T {
  return (isSecretValue(value) ? (value as { value: unknown }).value : value) as T;
}
