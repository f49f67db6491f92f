/**
 * The wait that lets alert policies on log-based metrics be created in the
 * same `pulumi up` as the metrics (infra/metricVisibility.ts). Its logic runs
 * here with the probe, the clock and `fetch` injected: no GCP.
 */
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import {
  METRIC_WAIT,
  MetricNotVisibleError,
  monitoringProbe,
  waitForMetricDescriptor,
  type DescriptorState,
} from "../../infra/metricVisibility.js";
import { runProgram, T } from "./harness.js";

const TYPE = "logging.googleapis.com/user/chat-gateway/ws_auth";

function clock() {
  let t = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    options: {
      ...METRIC_WAIT,
      now: () => t,
      sleep: async (ms: number) => {
        sleeps.push(ms);
        t += ms;
      },
    },
  };
}

/** A probe that answers "absent" `n` times, then "visible". */
function visibleAfter(n: number) {
  const calls: string[] = [];
  const probe = async (project: string, type: string): Promise<DescriptorState> => {
    calls.push(`${project} ${type}`);
    return calls.length > n ? "visible" : "absent";
  };
  return { probe, calls };
}

describe("waiting for a log-based metric's descriptor", () => {
  it("returns at once when Monitoring already shows it", async () => {
    const c = clock();
    const p = visibleAfter(0);
    expect(await waitForMetricDescriptor(p.probe, "proj", TYPE, c.options)).toEqual({ waitedMs: 0, probes: 1 });
    expect(p.calls).toEqual([`proj ${TYPE}`]);
    expect(c.sleeps).toEqual([]);
  });

  it("polls every 10 s until it appears (here after 4 minutes)", async () => {
    const c = clock();
    const result = await waitForMetricDescriptor(visibleAfter(24).probe, "proj", TYPE, c.options);
    expect(result).toEqual({ waitedMs: 240_000, probes: 25 });
    expect(new Set(c.sleeps)).toEqual(new Set([10_000]));
  });

  it("gives up after 15 minutes with an error that names the metric and says to run pulumi up again", async () => {
    const c = clock();
    const error = await waitForMetricDescriptor(visibleAfter(Infinity).probe, "proj", TYPE, c.options).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MetricNotVisibleError);
    expect((error as Error).message).toContain(TYPE);
    expect((error as Error).message).toContain("proj");
    expect((error as Error).message).toContain("run `pulumi up` again");
    expect(c.sleeps.reduce((a, b) => a + b, 0)).toBe(METRIC_WAIT.timeoutMs);
    expect(c.sleeps.length).toBe(90); // 91 looks over exactly 15 minutes
  });

  it("stops at once on an error waiting cannot fix (e.g. 403), without sleeping", async () => {
    const c = clock();
    const probe = async (): Promise<DescriptorState> => {
      throw new Error("Cloud Monitoring answered 403");
    };
    await expect(waitForMetricDescriptor(probe, "proj", TYPE, c.options)).rejects.toThrow("403");
    expect(c.sleeps).toEqual([]);
  });
});

describe("the Monitoring API probe", () => {
  const answering = (status: number, body = "") => {
    const seen: { url: string; auth: string | null }[] = [];
    const fetchFn = (async (url: string | URL | Request, init?: RequestInit) => {
      seen.push({ url: String(url), auth: new Headers(init?.headers).get("authorization") });
      return new Response(body, { status });
    }) as typeof fetch;
    return { fetchFn, seen };
  };

  it("GETs projects.metricDescriptors with a bearer token: 200 is visible, 404 is not yet", async () => {
    const ok = answering(200, "{}");
    expect(await monitoringProbe(async () => "tok-123", ok.fetchFn)("my-proj", TYPE)).toBe("visible");
    expect(ok.seen).toEqual([
      { url: `https://monitoring.googleapis.com/v3/projects/my-proj/metricDescriptors/${TYPE}`, auth: "Bearer tok-123" },
    ]);
    expect(await monitoringProbe(async () => "t", answering(404).fetchFn)("my-proj", TYPE)).toBe("absent");
  });

  it("any other answer is an error with the status and the API's message, never the token", async () => {
    const probe = monitoringProbe(async () => "secret-token-xyz", answering(403, '{"error":{"message":"Permission monitoring.metricDescriptors.get denied"}}').fetchFn);
    const error = (await probe("my-proj", TYPE).catch((e: unknown) => e)) as Error;
    expect(error.message).toContain("403");
    expect(error.message).toContain("monitoring.metricDescriptors.get");
    expect(error.message).not.toContain("secret-token-xyz");
  });
});

describe("the dynamic provider as Pulumi ships it", () => {
  it("serializes into a CommonJS module whose handler has create and diff, and loads google-auth-library there", async () => {
    const r = await runProgram("staging");
    const waits = r.ofType(T.metricVisible);
    expect(waits.map((w) => w.inputs.metricType).sort()).toEqual(
      ["store_unavailable", "ws_auth", "ws_close"].map((m) => `logging.googleapis.com/user/chat-gateway/${m}`),
    );
    const source = String(waits[0]!.inputs.__provider);
    expect(source).toContain('require("google-auth-library")');
    // What the dynamic provider host does with it (@pulumi/pulumi cmd/dynamic-provider: requireFromString(…).handler()).
    const requireFromString = createRequire(import.meta.url)("require-from-string") as (code: string) => { handler(): Record<string, unknown> };
    const provider = requireFromString(source).handler();
    expect(typeof provider.create).toBe("function");
    expect(typeof provider.diff).toBe("function");
    const diff = provider.diff as (id: string, o: object, n: object) => Promise<{ replaces: string[] }>;
    expect((await diff("x", { project: "p", metricType: "a" }, { project: "p", metricType: "b" })).replaces).toEqual(["metricType"]);
    expect((await diff("x", { project: "p", metricType: "a" }, { project: "p", metricType: "a" })).replaces).toEqual([]);
  });
});
