import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { RUNBOOK_ANCHORS } from "../../infra/monitoring.js";
import { cachedRuns, ROOT, STACKS, T, type ProgramRun, type Registered } from "./harness.js";

const run = cachedRuns();
const runbook = readFileSync(`${ROOT}docs/operations.md`, "utf8");

/** GitHub's heading anchors: lower-case, punctuation dropped, spaces to dashes. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  for (const line of markdown.split("\n")) {
    const heading = /^#{1,6}\s+(.*)$/.exec(line);
    if (heading) anchors.add(heading[1]!.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-"));
  }
  return anchors;
}

const metric = (r: ProgramRun, key: string) => r.ofType(T.logMetric).find((m) => m.inputs.name === `chat-gateway/${key}`)!;
const policies = (r: ProgramRun) => r.ofType(T.alert);
const policy = (r: ProgramRun, anchor: string) => policies(r).find((p) => String(p.inputs.documentation.content).includes(`#${anchor}`))!;
const threshold = (p: Registered): Record<string, any> => p.inputs.conditions[0].conditionThreshold;
const SERVICE_LOGS = 'resource.type="cloud_run_revision" AND resource.labels.service_name="chat-gateway"';

describe.each(STACKS)("%s stack: monitoring", (stack) => {
  it("a log-based metric counts WebSocket authentications by outcome and reason", async () => {
    const m = metric(await run(stack), "ws_auth");
    expect(m.inputs.filter).toBe(`${SERVICE_LOGS} AND jsonPayload.event="ws_auth"`);
    expect(m.inputs.labelExtractors).toEqual({ outcome: "EXTRACT(jsonPayload.outcome)", reason: "EXTRACT(jsonPayload.reason)" });
    expect(m.inputs.metricDescriptor).toMatchObject({ metricKind: "DELTA", valueType: "INT64" });
  });

  it("a log-based metric counts closes by code", async () => {
    const m = metric(await run(stack), "ws_close");
    expect(m.inputs.filter).toBe(`${SERVICE_LOGS} AND jsonPayload.event="ws_close"`);
    expect(m.inputs.labelExtractors.code).toBe("EXTRACT(jsonPayload.code)");
  });

  it("a log-based metric counts ticket store unavailability at severity ERROR", async () => {
    const m = metric(await run(stack), "store_unavailable");
    expect(m.inputs.filter).toBe(`${SERVICE_LOGS} AND jsonPayload.event="store_unavailable" AND severity>=ERROR`);
    expect(m.inputs.labelExtractors.operation).toBe("EXTRACT(jsonPayload.operation)");
  });

  it("log-based metrics count tickets issued and agent events published", async () => {
    const r = await run(stack);
    expect(metric(r, "tickets_issued").inputs.filter).toBe(`${SERVICE_LOGS} AND jsonPayload.event="ticket_issued"`);
    const events = metric(r, "events_published");
    expect(events.inputs.filter).toContain('log_id("run.googleapis.com/requests")');
    expect(events.inputs.filter).toContain('httpRequest.requestUrl=~"/internal/v1/users/[^/?]+/events"');
  });

  it("no request log entry that carries a ticket in its URL is stored (load balancer and Cloud Run request logs)", async () => {
    const exclusions = (await run(stack)).resources.filter((r) => r.type === "gcp:logging/projectExclusion:ProjectExclusion");
    expect(exclusions).toHaveLength(1);
    const filter = String(exclusions[0]!.inputs.filter);
    expect(filter).toContain('resource.type="http_load_balancer"');
    expect(filter).toContain(`${SERVICE_LOGS} AND log_id("run.googleapis.com/requests")`);
    expect(filter).toContain('httpRequest.requestUrl=~"[?&]ticket="');
    expect(exclusions[0]!.inputs.disabled).not.toBe(true);
  });

  it("every label of every log-based metric has an extractor, and nothing else does", async () => {
    for (const m of (await run(stack)).ofType(T.logMetric)) {
      const labels = (m.inputs.metricDescriptor.labels ?? []).map((l: { key: string }) => l.key).sort();
      expect(Object.keys(m.inputs.labelExtractors ?? {}).sort(), m.inputs.name).toEqual(labels);
    }
  });

  it("the auth failure alert fires when more than 1% of authentications over 5 minutes are rejected", async () => {
    const r = await run(stack);
    const c = threshold(policy(r, RUNBOOK_ANCHORS.authFailures));
    expect(c.filter).toContain('metric.type="logging.googleapis.com/user/chat-gateway/ws_auth"');
    expect(c.filter).toContain('metric.label.outcome="rejected"');
    expect(c.denominatorFilter).toContain('metric.type="logging.googleapis.com/user/chat-gateway/ws_auth"');
    expect(c.denominatorFilter).not.toContain("outcome");
    expect(c.aggregations).toEqual(c.denominatorAggregations);
    expect(c.aggregations[0]).toMatchObject({ alignmentPeriod: "300s", perSeriesAligner: "ALIGN_DELTA", crossSeriesReducer: "REDUCE_SUM" });
    expect(c).toMatchObject({ comparison: "COMPARISON_GT", thresholdValue: 0.01 });
  });

  it("the 5xx alert is the ratio of the Cloud Run service's 5xx requests to all of them", async () => {
    const c = threshold(policy(await run(stack), RUNBOOK_ANCHORS.http5xx));
    const all = 'metric.type="run.googleapis.com/request_count" AND resource.type="cloud_run_revision" AND resource.label.service_name="chat-gateway"';
    expect(c.filter).toBe(`${all} AND metric.label.response_code_class="5xx"`);
    expect(c.denominatorFilter).toBe(all);
    expect(c).toMatchObject({ comparison: "COMPARISON_GT", thresholdValue: 0.02 });
  });

  it("the ticket store alert fires on any store_unavailable line", async () => {
    const c = threshold(policy(await run(stack), RUNBOOK_ANCHORS.storeUnavailable));
    expect(c.filter).toContain('metric.type="logging.googleapis.com/user/chat-gateway/store_unavailable"');
    expect(c).toMatchObject({ comparison: "COMPARISON_GT", thresholdValue: 0 });
  });

  it("a surge of 1011 closes alerts", async () => {
    const c = threshold(policy(await run(stack), RUNBOOK_ANCHORS.internalErrorCloses));
    expect(c.filter).toContain('metric.type="logging.googleapis.com/user/chat-gateway/ws_close"');
    expect(c.filter).toContain('metric.label.code="1011"');
    expect(c).toMatchObject({ comparison: "COMPARISON_GT", thresholdValue: 20 });
  });

  it("an uptime check fetches /health over HTTPS through the load balancer's domain, and its failure alerts", async () => {
    const r = await run(stack);
    const check = r.one(T.uptime);
    expect(check.inputs.monitoredResource).toEqual({
      type: "uptime_url",
      labels: { project_id: r.config["chat-gateway:project"], host: r.config["chat-gateway:domain"] },
    });
    expect(check.inputs.httpCheck).toMatchObject({ path: "/health", port: 443, useSsl: true, validateSsl: true });
    const c = threshold(policy(r, RUNBOOK_ANCHORS.uptime));
    expect(c.filter).toContain('metric.type="monitoring.googleapis.com/uptime_check/check_passed"');
    expect(c.filter).toContain(`metric.label.check_id="${check.state.uptimeCheckId}"`);
  });

  it("every alert policy links its runbook section", async () => {
    const r = await run(stack);
    const base = r.config["chat-gateway:runbookBaseUrl"];
    const anchors = headingAnchors(runbook);
    expect(policies(r)).toHaveLength(Object.keys(RUNBOOK_ANCHORS).length);
    for (const anchor of Object.values(RUNBOOK_ANCHORS)) {
      const p = policy(r, anchor);
      expect(p, anchor).toBeDefined();
      expect(p.inputs.documentation.content).toContain(`${base}#${anchor}`);
      expect(p.inputs.documentation.mimeType).toBe("text/markdown");
      expect(anchors.has(anchor), `docs/operations.md has a section #${anchor}`).toBe(true);
    }
  });

  it("every alert notifies every address in alertEmails", async () => {
    const r = await run(stack);
    const emails = JSON.parse(r.config["chat-gateway:alertEmails"]!) as string[];
    const channels = r.ofType(T.channel);
    expect(channels.map((c) => c.inputs.labels.email_address)).toEqual(emails);
    for (const c of channels) expect(c.inputs.type).toBe("email");
    for (const p of policies(r)) expect(p.inputs.notificationChannels).toEqual(channels.map((c) => c.state.name));
  });

  it("every metric an alert or the dashboard reads is one the stack defines or Cloud Run/Monitoring provides", async () => {
    const r = await run(stack);
    const defined = new Set(r.ofType(T.logMetric).map((m) => `logging.googleapis.com/user/${m.inputs.name}`));
    const builtIn = /^(run\.googleapis\.com|monitoring\.googleapis\.com)\//;
    const text = [JSON.stringify(policies(r).map((p) => p.inputs.conditions)), String(r.one(T.dashboard).inputs.dashboardJson)].join("\n");
    const used = [...text.matchAll(/metric\.type=\\+"([^"\\]+)\\+"/g)].map((m) => m[1]!);
    expect(used.length).toBeGreaterThan(10);
    for (const type of used) expect(defined.has(type) || builtIn.test(type), type).toBe(true);
  });

  it("the dashboard shows connections, auth outcomes, closes by code, ticket rate, latency and event delivery", async () => {
    const r = await run(stack);
    const dashboard = JSON.parse(String(r.one(T.dashboard).inputs.dashboardJson)) as {
      mosaicLayout: { tiles: { widget: { title: string; xyChart: { dataSets: { timeSeriesQuery: { timeSeriesFilter: { filter: string; aggregation: { groupByFields: string[] } } } }[] } } }[] };
    };
    const tiles = dashboard.mosaicLayout.tiles.map((t) => ({
      title: t.widget.title,
      filters: t.widget.xyChart.dataSets.map((d) => d.timeSeriesQuery.timeSeriesFilter.filter).join(" | "),
      groupBy: t.widget.xyChart.dataSets.flatMap((d) => d.timeSeriesQuery.timeSeriesFilter.aggregation.groupByFields),
    }));
    const tile = (title: RegExp) => tiles.find((t) => title.test(t.title))!;
    expect(tile(/^Connections/).filters).toMatch(/ws_auth.*outcome="accepted".*\|.*ws_close/);
    expect(tile(/^Authentication outcomes/).groupBy).toEqual(["metric.label.outcome", "metric.label.reason"]);
    expect(tile(/^Closes by code/).groupBy).toEqual(["metric.label.code"]);
    expect(tile(/^Tickets issued/).filters).toContain("chat-gateway/tickets_issued");
    expect(tile(/^Request latency/).filters).toContain("run.googleapis.com/request_latencies");
    expect(tile(/^Event delivery/).filters).toContain("chat-gateway/events_published");
    for (const t of dashboard.mosaicLayout.tiles) expect(t.widget.title).toBeTruthy();
  });
});

// The 1011 alert, held against log lines the service really writes: the
// gateway's own 1011 (a store call that throws a bug) pages; a client that
// closes with 1011 does not. The filters are evaluated clause by clause
// (field="value" AND …), the way Cloud Logging and Monitoring read them; a
// clause of another shape fails the test rather than being skipped.
describe("the 1011 alert and the service's own ws_close lines", () => {
  it("counts a 1011 the gateway sent, and not one a client sent", async () => {
    const lines = await realCloseLines();
    const entry = (line: Record<string, unknown>) => ({ resource: { type: "cloud_run_revision", labels: { service_name: "chat-gateway" } }, jsonPayload: line });
    const r = await run("staging");
    const m = metric(r, "ws_close");
    const alert = threshold(policy(r, RUNBOOK_ANCHORS.internalErrorCloses));
    const pages = (line: Record<string, unknown>) => {
      const e = entry(line);
      if (!matchesLogFilter(String(m.inputs.filter), e)) return false;
      const labels = Object.fromEntries(
        Object.entries(m.inputs.labelExtractors as Record<string, string>).map(([k, x]) => [k, valueAt(e, /^EXTRACT\((.+)\)$/.exec(x)![1]!)]),
      );
      return matchesMetricFilter(String(alert.filter), `logging.googleapis.com/user/${m.inputs.name}`, labels);
    };
    expect(lines.server).toMatchObject({ event: "ws_close", code: "1011", closed_by: "server" });
    expect(lines.client).toMatchObject({ event: "ws_close", closed_by: "client" });
    expect(pages(lines.server)).toBe(true);
    expect(pages(lines.client)).toBe(false);
  });
});

/** One ws_close line for a 1011 the gateway sent, and one for a 1011 a client sent, from a real gateway. */
async function realCloseLines(): Promise<{ server: Record<string, unknown>; client: Record<string, unknown> }> {
  const { startGateway, ticketFor, TestClient } = await import("../support/gateway.js");
  const { createMemoryStore } = await import("../../service/src/plugins/store/memory.js");
  const memory = createMemoryStore();
  let broken = false;
  // A store whose admit() (the connect's store step) throws a bug (not an outage) once asked to: the connect ends 1011 INTERNAL_ERROR.
  const store = { ...memory, admit: (request: Parameters<typeof memory.admit>[0]) => (broken ? Promise.reject(new TypeError("boom")) : memory.admit(request)) } as typeof memory;
  const gw = await startGateway({ store });
  try {
    const polite = await TestClient.connect(gw, await ticketFor(gw, "client-1011"));
    await polite.waitForType("connection_established");
    polite.socket.close(1011);
    await polite.closed;
    broken = true;
    const failing = await TestClient.connect(gw, await ticketFor(gw, "server-1011"));
    await failing.closed;
    // The server logs its close when its side of the handshake ends, a moment after the client's.
    for (let i = 0; i < 100 && !gw.logs.records.some((l) => l.event === "ws_close" && l.closed_by === "server"); i++) await new Promise((r) => setTimeout(r, 20));
    const closes = gw.logs.records.filter((l) => l.event === "ws_close");
    return { server: closes.find((l) => l.closed_by === "server")!, client: closes.find((l) => l.closed_by === "client")! };
  } finally {
    await gw.close();
    await memory.close();
  }
}

function valueAt(entry: unknown, path: string): string | undefined {
  const value = path.split(".").reduce<unknown>((v, k) => (v !== null && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined), entry);
  return value === undefined ? undefined : String(value);
}

function clauses(filter: string): Array<[string, string]> {
  return filter.split(" AND ").map((clause) => {
    const m = /^([\w.]+)="([^"]*)"$/.exec(clause.trim());
    if (!m) throw new Error(`a clause this test cannot evaluate: ${clause}`);
    return [m[1]!, m[2]!];
  });
}

function matchesLogFilter(filter: string, entry: unknown): boolean {
  return clauses(filter).every(([path, value]) => valueAt(entry, path) === value);
}

function matchesMetricFilter(filter: string, metricType: string, labels: Record<string, string | undefined>): boolean {
  return clauses(filter).every(([path, value]) => {
    if (path === "metric.type") return value === metricType;
    if (path === "resource.type") return value === "cloud_run_revision";
    if (path.startsWith("metric.label.")) return labels[path.slice("metric.label.".length)] === value;
    throw new Error(`a clause this test cannot evaluate: ${path}`);
  });
}
