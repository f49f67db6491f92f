import * as pulumi from "@pulumi/pulumi";

/**
 * Waits, at apply time, until Cloud Monitoring shows a log-based metric's
 * descriptor, so that the alert policies on it can be created in the same
 * `pulumi up` that creates the metric.
 *
 * Why: a policy whose filter names `logging.googleapis.com/user/…` created
 * seconds after the metric gets 404 "Cannot find metric(s) that match type =
 * …; it could take up to 10 minutes to become available"
 * (hashicorp/terraform-provider-google#11102, GoogleCloudPlatform/cloud-foundation-fabric#3739).
 * Mocks cannot see this; only the Monitoring API can. So a dynamic resource
 * polls `projects.metricDescriptors.get`
 * (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.metricDescriptors/get)
 * until it answers 200, for at most METRIC_WAIT.timeoutMs, then fails with
 * an error that says what to do. The policies depend on it.
 *
 * The wait logic is a plain function (`waitForMetricDescriptor`) with its
 * probe, clock and sleep passed in, so test/infra/metric-visibility.test.ts
 * runs it without GCP.
 */

/** Up to 10 minutes, Monitoring says; 15 leaves room, and polling every 10 s costs ~90 reads at most. */
export const METRIC_WAIT = { timeoutMs: 15 * 60_000, intervalMs: 10_000 } as const;

/** What one look at the descriptor found. */
export type DescriptorState = "visible" | "absent";

/** Looks once; rejects on an answer that waiting cannot fix (403, 400, …). */
export type DescriptorProbe = (project: string, metricType: string) => Promise<DescriptorState>;

export interface WaitOptions {
  readonly timeoutMs: number;
  readonly intervalMs: number;
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
}

export class MetricNotVisibleError extends Error {
  constructor(project: string, metricType: string, waitedMs: number) {
    super(
      `Cloud Monitoring still does not show the metric ${metricType} in project ${project} after ${Math.round(waitedMs / 1000)} s ` +
        "(a new log-based metric usually appears within 10 minutes). Nothing needs undoing: run `pulumi up` again later; " +
        "the alert policies on it are created then.",
    );
    this.name = "MetricNotVisibleError";
  }
}

/**
 * Polls until the descriptor is visible; resolves with the time waited.
 * A probe error ends the wait at once (it is not a propagation delay).
 */
export async function waitForMetricDescriptor(
  probe: DescriptorProbe,
  project: string,
  metricType: string,
  options: WaitOptions,
): Promise<{ waitedMs: number; probes: number }> {
  const started = options.now();
  for (let probes = 1; ; probes++) {
    if ((await probe(project, metricType)) === "visible") return { waitedMs: options.now() - started, probes };
    const waited = options.now() - started;
    if (waited + options.intervalMs > options.timeoutMs) throw new MetricNotVisibleError(project, metricType, waited);
    await options.sleep(options.intervalMs);
  }
}

/**
 * The real probe: one GET of the descriptor with `fetch` and an access token.
 * 404 is "not yet"; any other failure is reported with its status, never with
 * the token.
 */
export function monitoringProbe(getToken: () => Promise<string>, fetchFn: typeof fetch = fetch): DescriptorProbe {
  return async (project, metricType) => {
    const url = `https://monitoring.googleapis.com/v3/projects/${encodeURIComponent(project)}/metricDescriptors/${metricType
      .split("/")
      .map(encodeURIComponent)
      .join("/")}`;
    const response = await fetchFn(url, { headers: { authorization: `Bearer ${await getToken()}` } });
    if (response.ok) return "visible";
    if (response.status === 404) return "absent";
    const body = (await response.text().catch(() => "")).slice(0, 300);
    throw new Error(`Cloud Monitoring answered ${response.status} to GET metricDescriptors/${metricType} in project ${project}: ${body}`);
  };
}

interface WaitInputs {
  readonly project: string;
  readonly metricType: string;
}

/**
 * The dynamic provider. Pulumi serializes it into its own CommonJS process, so
 * everything it uses is either in its body or a plain function above, and
 * `google-auth-library` (installed with @google-cloud/secret-manager) is
 * `require`d there: it finds the deployer's Application Default Credentials.
 */
export const metricWaitProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: WaitInputs) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { GoogleAuth } = require("google-auth-library") as typeof import("google-auth-library");
    const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/monitoring.read"] });
    const getToken = async () => {
      const token = await auth.getAccessToken();
      if (!token) throw new Error("no Google access token (run `gcloud auth application-default login`)");
      return token;
    };
    const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
    const result = await waitForMetricDescriptor(monitoringProbe(getToken), inputs.project, inputs.metricType, {
      ...METRIC_WAIT,
      now: Date.now,
      sleep,
    });
    return { id: `${inputs.project}/${inputs.metricType}`, outs: { ...inputs, waitedSeconds: Math.round(result.waitedMs / 1000) } };
  },
  async diff(id: string, olds: WaitInputs, news: WaitInputs) {
    const changed = olds.project !== news.project || olds.metricType !== news.metricType;
    return { changes: changed, replaces: changed ? ["metricType"] : [], deleteBeforeReplace: false };
  },
};

export interface MetricVisibleArgs {
  readonly project: pulumi.Input<string>;
  /** `logging.googleapis.com/user/<metric name>` */
  readonly metricType: pulumi.Input<string>;
}

/** Exists once Monitoring shows the metric; depend on it before creating a policy on it. */
export class MetricVisible extends pulumi.dynamic.Resource {
  declare readonly metricType: pulumi.Output<string>;

  constructor(name: string, args: MetricVisibleArgs, opts?: pulumi.CustomResourceOptions) {
    super(metricWaitProvider, name, { ...args, waitedSeconds: undefined }, opts, "chat-gateway", "MetricVisible");
  }
}
