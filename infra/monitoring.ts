import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { MetricVisible } from "./metricVisibility.js";

/**
 * Sections of docs/operations.md, one per alert. They are the GitHub slugs of
 * the section headings (test/infra/monitoring.test.ts holds them together).
 */
export const RUNBOOK_ANCHORS = {
  authFailures: "alert-websocket-authentication-failures",
  http5xx: "alert-5xx-responses",
  storeUnavailable: "alert-ticket-store-unavailable",
  internalErrorCloses: "alert-1011-internal-error-closes",
  uptime: "alert-uptime-check-failing",
} as const;
export type AlertName = keyof typeof RUNBOOK_ANCHORS;

/**
 * How long a threshold condition must hold before it fires. The Monitoring
 * API refuses a condition that sets evaluationMissingData with a zero
 * duration (400 "Conditions setting evaluation_missing_data must have a
 * non-zero duration": GoogleCloudPlatform/monitoring-dashboard-samples#280,
 * chainguard-dev/terraform-infra-common#401), and every condition here sets it.
 */
export const MIN_CONDITION_DURATION = "60s";

export interface MonitoringArgs {
  readonly project: string;
  /** SERVICE_ID: prefixes the log-based metric names. */
  readonly serviceId: string;
  /** The Cloud Run service whose logs and metrics are watched. */
  readonly serviceName: pulumi.Input<string>;
  /** The public host name; the uptime check fetches https://<domain>/health through the load balancer. */
  readonly domain: string;
  readonly alertEmails: readonly string[];
  /** The URL of docs/operations.md; each alert links `${runbookBaseUrl}#<anchor>`. */
  readonly runbookBaseUrl: string;
  readonly thresholds: {
    readonly authFailureRatio: number;
    readonly http5xxRatio: number;
    readonly internalErrorCloses: number;
  };
}

type LabelSpec = Readonly<Record<string, { extractor: string; description: string }>>;

/**
 * What on-call sees and is woken by. Log-based metrics count the gateway's
 * own JSON log lines (`jsonPayload.event`: ws_auth, ws_close,
 * store_unavailable, ticket_issued; docs/protocol.md §6) and the Cloud Run
 * request log (internal event publishes); Cloud Run's built-in metrics give
 * 5xx and latency. Every alert policy notifies every e-mail channel and links
 * its section of the runbook (docs/operations.md). An uptime check fetches
 * /health (never /healthz: Cloud Run's front end answers paths ending in `z`
 * itself, infra/loadBalancer.ts) through the load balancer, so DNS, the certificate, the load
 * balancer and Cloud Run are checked together, the way a browser meets them.
 */
export class Monitoring extends pulumi.ComponentResource {
  readonly notificationChannels: readonly gcp.monitoring.NotificationChannel[];
  readonly metrics: {
    readonly wsAuth: gcp.logging.Metric;
    readonly wsClose: gcp.logging.Metric;
    readonly storeUnavailable: gcp.logging.Metric;
    readonly ticketsIssued: gcp.logging.Metric;
    readonly eventsPublished: gcp.logging.Metric;
  };
  readonly metricsVisible: Readonly<Record<"wsAuth" | "wsClose" | "storeUnavailable", MetricVisible>>;
  readonly uptimeCheck: gcp.monitoring.UptimeCheckConfig;
  readonly alertPolicies: Readonly<Record<AlertName, gcp.monitoring.AlertPolicy>>;
  readonly dashboard: gcp.monitoring.Dashboard;
  readonly ticketUrlExclusion: gcp.logging.ProjectExclusion;

  constructor(name: string, args: MonitoringArgs, opts?: pulumi.ComponentResourceOptions) {
    super("chat-gateway:infra:Monitoring", name, {}, opts);
    const child = { parent: this, dependsOn: opts?.dependsOn };
    // index.ts passes a plain array of resources.
    const inherited = (Array.isArray(opts?.dependsOn) ? opts.dependsOn : []) as pulumi.Resource[];
    const runbook = (anchor: string) => `${args.runbookBaseUrl}#${anchor}`;

    this.notificationChannels = args.alertEmails.map(
      (email, i) =>
        new gcp.monitoring.NotificationChannel(
          `${name}-email-${i}`,
          { type: "email", displayName: `Chat gateway on-call: ${email}`, labels: { email_address: email } },
          child,
        ),
    );
    const channels = this.notificationChannels.map((c) => c.name);

    // --- Log-based metrics -------------------------------------------------
    const gatewayLogs = pulumi.interpolate`resource.type="cloud_run_revision" AND resource.labels.service_name="${args.serviceName}"`;
    const logMetric = (key: string, displayName: string, filter: pulumi.Input<string>, labels: LabelSpec): gcp.logging.Metric =>
      new gcp.logging.Metric(
        `${name}-${key.replace(/_/g, "-")}`,
        {
          name: `${args.serviceId}/${key}`,
          description: displayName,
          filter,
          metricDescriptor: {
            metricKind: "DELTA",
            valueType: "INT64",
            unit: "1",
            displayName,
            labels: Object.entries(labels).map(([k, l]) => ({ key: k, valueType: "STRING", description: l.description })),
          },
          labelExtractors: Object.fromEntries(Object.entries(labels).map(([k, l]) => [k, l.extractor])),
        },
        child,
      );

    this.metrics = {
      wsAuth: logMetric("ws_auth", "WebSocket authentication outcomes", pulumi.interpolate`${gatewayLogs} AND jsonPayload.event="ws_auth"`, {
        outcome: { extractor: "EXTRACT(jsonPayload.outcome)", description: "accepted or rejected" },
        reason: { extractor: "EXTRACT(jsonPayload.reason)", description: "OK, or the error code (TICKET_EXPIRED, ORIGIN_FORBIDDEN, …)" },
      }),
      wsClose: logMetric("ws_close", "WebSocket closes", pulumi.interpolate`${gatewayLogs} AND jsonPayload.event="ws_close"`, {
        code: { extractor: "EXTRACT(jsonPayload.code)", description: "The close code (4401, 4012, 1011, …; a client's own codes in buckets)" },
        reason: { extractor: "EXTRACT(jsonPayload.reason)", description: "The close reason (the error code's name)" },
        // A client chooses its close code too: only closed_by="server" is the gateway's word.
        closed_by: { extractor: "EXTRACT(jsonPayload.closed_by)", description: "server or client: who closed" },
      }),
      storeUnavailable: logMetric(
        "store_unavailable",
        "Ticket store unreachable",
        pulumi.interpolate`${gatewayLogs} AND jsonPayload.event="store_unavailable" AND severity>=ERROR`,
        { operation: { extractor: "EXTRACT(jsonPayload.operation)", description: "The operation (route) that could not reach the store" } },
      ),
      ticketsIssued: logMetric("tickets_issued", "WebSocket tickets issued", pulumi.interpolate`${gatewayLogs} AND jsonPayload.event="ticket_issued"`, {}),
      // Cloud Run's request log has one entry per request, whatever the gateway's log level.
      eventsPublished: logMetric(
        "events_published",
        "Agent events published through the internal API",
        pulumi.interpolate`${gatewayLogs} AND log_id("run.googleapis.com/requests") AND httpRequest.requestMethod="POST" AND httpRequest.requestUrl=~"/internal/v1/users/[^/?]+/events"`,
        { status: { extractor: "EXTRACT(httpRequest.status)", description: "HTTP status (202: accepted and fanned out)" } },
      ),
    };
    // The gateway redacts `?ticket=` from its own log lines, but the load
    // balancer's and Cloud Run's request logs record full URLs. A ticket is
    // single-use and lives 30 s, yet "no ticket in any log" must hold for the
    // platform's logs too: drop those request entries before they are stored.
    // A project exclusion applies to the _Default sink only: a sink added later
    // (an export) still gets them unless it excludes them too (docs/operations.md).
    // The gateway's own ws_auth/ws_close lines carry everything on-call needs.
    this.ticketUrlExclusion = new gcp.logging.ProjectExclusion(
      `${name}-ticket-urls`,
      {
        name: `${args.serviceId}-ticket-urls`,
        description: "Request log entries whose URL carries a WebSocket ticket (/ws?ticket=…)",
        filter: pulumi.interpolate`(resource.type="http_load_balancer" OR (${gatewayLogs} AND log_id("run.googleapis.com/requests"))) AND httpRequest.requestUrl=~"[?&]ticket="`,
      },
      child,
    );
    const metricType = (m: gcp.logging.Metric) => pulumi.interpolate`logging.googleapis.com/user/${m.name}`;
    // The alert policies on log-based metrics wait until Monitoring shows them (infra/metricVisibility.ts).
    const visible = (key: string, m: gcp.logging.Metric) =>
      new MetricVisible(`${name}-${key}-visible`, { project: args.project, metricType: metricType(m) }, { parent: this, dependsOn: [m] });
    this.metricsVisible = {
      wsAuth: visible("ws-auth", this.metrics.wsAuth),
      wsClose: visible("ws-close", this.metrics.wsClose),
      storeUnavailable: visible("store-unavailable", this.metrics.storeUnavailable),
    };

    // --- Uptime check --------------------------------------------------------
    this.uptimeCheck = new gcp.monitoring.UptimeCheckConfig(
      `${name}-health`,
      {
        displayName: `Chat gateway https://${args.domain}/health`,
        period: "60s",
        timeout: "10s",
        checkerType: "STATIC_IP_CHECKERS",
        monitoredResource: { type: "uptime_url", labels: { project_id: args.project, host: args.domain } },
        httpCheck: {
          path: "/health",
          port: 443,
          useSsl: true,
          validateSsl: true,
          requestMethod: "GET",
          acceptedResponseStatusCodes: [{ statusClass: "STATUS_CLASS_2XX" }],
        },
      },
      child,
    );

    // --- Alert policies ----------------------------------------------------
    const sum = (alignmentPeriod: string) => [{ alignmentPeriod, perSeriesAligner: "ALIGN_DELTA", crossSeriesReducer: "REDUCE_SUM" }];
    const policy = (
      key: AlertName,
      displayName: string,
      severity: "CRITICAL" | "ERROR" | "WARNING",
      meaning: string,
      condition: gcp.types.input.monitoring.AlertPolicyConditionConditionThreshold,
      waitFor: readonly pulumi.Resource[] = [],
    ): gcp.monitoring.AlertPolicy =>
      new gcp.monitoring.AlertPolicy(
        `${name}-${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
        {
          displayName: `Chat gateway: ${displayName}`,
          combiner: "OR",
          severity,
          notificationChannels: channels,
          conditions: [{ displayName, conditionThreshold: condition }],
          alertStrategy: { autoClose: "1800s" },
          documentation: {
            mimeType: "text/markdown",
            subject: `Chat gateway: ${displayName}`,
            content: `${meaning}\n\nRunbook: [${displayName}](${runbook(RUNBOOK_ANCHORS[key])})`,
            links: [{ displayName: "Runbook", url: runbook(RUNBOOK_ANCHORS[key]) }],
          },
        },
        { parent: this, dependsOn: [...inherited, ...waitFor] },
      );

    const runRequests = pulumi.interpolate`metric.type="run.googleapis.com/request_count" AND resource.type="cloud_run_revision" AND resource.label.service_name="${args.serviceName}"`;
    const pct = (ratio: number) => `${+(ratio * 100).toFixed(3)}%`;

    this.alertPolicies = {
      authFailures: policy(
        "authFailures",
        `WebSocket authentication failures above ${pct(args.thresholds.authFailureRatio)}`,
        "WARNING",
        `More than ${pct(args.thresholds.authFailureRatio)} of WebSocket authentications were rejected over 5 minutes (log metric ${args.serviceId}/ws_auth, outcome="rejected").`,
        {
          filter: pulumi.interpolate`metric.type="${metricType(this.metrics.wsAuth)}" AND resource.type="cloud_run_revision" AND metric.label.outcome="rejected"`,
          aggregations: sum("300s"),
          denominatorFilter: pulumi.interpolate`metric.type="${metricType(this.metrics.wsAuth)}" AND resource.type="cloud_run_revision"`,
          denominatorAggregations: sum("300s"),
          comparison: "COMPARISON_GT",
          thresholdValue: args.thresholds.authFailureRatio,
          duration: MIN_CONDITION_DURATION,
          evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE",
        },
        [this.metricsVisible.wsAuth],
      ),
      http5xx: policy(
        "http5xx",
        `5xx responses above ${pct(args.thresholds.http5xxRatio)}`,
        "ERROR",
        `More than ${pct(args.thresholds.http5xxRatio)} of the Cloud Run service's requests answered 5xx over 5 minutes (run.googleapis.com/request_count, response_code_class="5xx").`,
        {
          filter: pulumi.interpolate`${runRequests} AND metric.label.response_code_class="5xx"`,
          aggregations: sum("300s"),
          denominatorFilter: runRequests,
          denominatorAggregations: sum("300s"),
          comparison: "COMPARISON_GT",
          thresholdValue: args.thresholds.http5xxRatio,
          duration: MIN_CONDITION_DURATION,
          evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE",
        },
      ),
      storeUnavailable: policy(
        "storeUnavailable",
        "Ticket store unavailable",
        "CRITICAL",
        `The gateway could not reach Redis (log lines event="store_unavailable", log metric ${args.serviceId}/store_unavailable): tickets are refused with 503 TICKET_STORE_UNAVAILABLE and new WebSockets close with 4013.`,
        {
          filter: pulumi.interpolate`metric.type="${metricType(this.metrics.storeUnavailable)}" AND resource.type="cloud_run_revision"`,
          aggregations: sum("60s"),
          comparison: "COMPARISON_GT",
          thresholdValue: 0,
          duration: MIN_CONDITION_DURATION,
          evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE",
        },
        [this.metricsVisible.storeUnavailable],
      ),
      internalErrorCloses: policy(
        "internalErrorCloses",
        `More than ${args.thresholds.internalErrorCloses} WebSocket closes with 1011 in 5 minutes`,
        "ERROR",
        `The gateway closed WebSockets with 1011 INTERNAL_ERROR (an unexpected server fault) more than ${args.thresholds.internalErrorCloses} times in 5 minutes (log metric ${args.serviceId}/ws_close, code="1011", closed_by="server"; a client closing with 1011 does not count).`,
        {
          filter: pulumi.interpolate`metric.type="${metricType(this.metrics.wsClose)}" AND resource.type="cloud_run_revision" AND metric.label.code="1011" AND metric.label.closed_by="server"`,
          aggregations: sum("300s"),
          comparison: "COMPARISON_GT",
          thresholdValue: args.thresholds.internalErrorCloses,
          duration: MIN_CONDITION_DURATION,
          evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE",
        },
        [this.metricsVisible.wsClose],
      ),
      uptime: policy(
        "uptime",
        `Uptime check of https://${args.domain}/health failing`,
        "CRITICAL",
        `https://${args.domain}/health failed from more than one checker region for 2 minutes (monitoring.googleapis.com/uptime_check/check_passed). Browsers probably cannot reach the gateway.`,
        {
          filter: pulumi.interpolate`metric.type="monitoring.googleapis.com/uptime_check/check_passed" AND resource.type="uptime_url" AND metric.label.check_id="${this.uptimeCheck.uptimeCheckId}"`,
          aggregations: [
            { alignmentPeriod: "60s", perSeriesAligner: "ALIGN_NEXT_OLDER", crossSeriesReducer: "REDUCE_COUNT_FALSE", groupByFields: ["resource.label.host"] },
          ],
          comparison: "COMPARISON_GT",
          thresholdValue: 1,
          duration: "120s",
          // No data from the checker is itself a failure.
          evaluationMissingData: "EVALUATION_MISSING_DATA_ACTIVE",
        },
      ),
    };

    // --- Dashboard ---------------------------------------------------------
    this.dashboard = new gcp.monitoring.Dashboard(
      `${name}-dashboard`,
      {
        dashboardJson: pulumi
          .all([
            args.serviceName,
            metricType(this.metrics.wsAuth),
            metricType(this.metrics.wsClose),
            metricType(this.metrics.ticketsIssued),
            metricType(this.metrics.eventsPublished),
            metricType(this.metrics.storeUnavailable),
          ])
          .apply(([service, wsAuth, wsClose, tickets, events, store]) =>
            JSON.stringify(gatewayDashboard({ serviceId: args.serviceId, service, wsAuth, wsClose, tickets, events, store })),
          ),
      },
      child,
    );

    this.registerOutputs({
      dashboard: this.dashboard.id,
      uptimeCheckId: this.uptimeCheck.uptimeCheckId,
      alertPolicies: Object.fromEntries(Object.entries(this.alertPolicies).map(([k, p]) => [k, p.name])),
    });
  }
}

interface DashboardInputs {
  readonly serviceId: string;
  readonly service: string;
  readonly wsAuth: string;
  readonly wsClose: string;
  readonly tickets: string;
  readonly events: string;
  readonly store: string;
}

interface Series {
  readonly filter: string;
  readonly aligner?: string;
  readonly reducer?: string;
  readonly groupBy?: readonly string[];
  readonly legend?: string;
}

/** The dashboard's JSON (https://cloud.google.com/monitoring/api/ref_v3/rest/v1/projects.dashboards). */
export function gatewayDashboard(d: DashboardInputs): Record<string, unknown> {
  const onRun = `resource.type="cloud_run_revision"`;
  const service = `resource.label.service_name="${d.service}"`;
  const chart = (title: string, series: readonly Series[], unit = "") => ({
    title,
    xyChart: {
      chartOptions: { mode: "COLOR" },
      ...(unit ? { yAxis: { label: unit, scale: "LINEAR" } } : {}),
      dataSets: series.map((s) => ({
        plotType: "LINE",
        ...(s.legend ? { legendTemplate: s.legend } : {}),
        timeSeriesQuery: {
          timeSeriesFilter: {
            filter: s.filter,
            aggregation: {
              alignmentPeriod: "60s",
              perSeriesAligner: s.aligner ?? "ALIGN_RATE",
              crossSeriesReducer: s.reducer ?? "REDUCE_SUM",
              groupByFields: [...(s.groupBy ?? [])],
            },
          },
        },
      })),
    },
  });
  const widgets = [
    chart(
      "Connections: WebSockets opened (accepted) and closed per second",
      [
        { filter: `metric.type="${d.wsAuth}" AND ${onRun} AND metric.label.outcome="accepted"`, legend: "opened" },
        { filter: `metric.type="${d.wsClose}" AND ${onRun}`, legend: "closed" },
      ],
      "per second",
    ),
    chart("Authentication outcomes by reason", [
      { filter: `metric.type="${d.wsAuth}" AND ${onRun}`, groupBy: ["metric.label.outcome", "metric.label.reason"] },
    ]),
    chart("Closes by code", [{ filter: `metric.type="${d.wsClose}" AND ${onRun}`, groupBy: ["metric.label.code"] }]),
    chart("Tickets issued per second", [{ filter: `metric.type="${d.tickets}" AND ${onRun}` }], "per second"),
    chart(
      "Request latency (WebSocket requests last as long as their connection)",
      ["50", "95", "99"].map((p) => ({
        filter: `metric.type="run.googleapis.com/request_latencies" AND ${onRun} AND ${service}`,
        aligner: "ALIGN_DELTA",
        reducer: `REDUCE_PERCENTILE_${p}`,
        legend: `p${p}`,
      })),
      "ms",
    ),
    chart("Event delivery: agent events published per second, by status", [
      { filter: `metric.type="${d.events}" AND ${onRun}`, groupBy: ["metric.label.status"] },
    ]),
    chart("Requests by response class", [
      { filter: `metric.type="run.googleapis.com/request_count" AND ${onRun} AND ${service}`, groupBy: ["metric.label.response_code_class"] },
    ]),
    chart("Ticket store unavailable, by operation", [{ filter: `metric.type="${d.store}" AND ${onRun}`, groupBy: ["metric.label.operation"] }]),
    chart("Instances", [
      {
        filter: `metric.type="run.googleapis.com/container/instance_count" AND ${onRun} AND ${service}`,
        aligner: "ALIGN_MAX",
        groupBy: ["metric.label.state"],
      },
    ]),
  ];
  return {
    displayName: `Chat gateway (${d.serviceId})`,
    mosaicLayout: {
      columns: 48,
      tiles: widgets.map((widget, i) => ({ xPos: (i % 2) * 24, yPos: Math.floor(i / 2) * 16, width: 24, height: 16, widget })),
    },
  };
}
