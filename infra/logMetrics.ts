import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { MetricVisible } from "./metricVisibility.js";

/**
 * Log-based metrics: counts of the gateway's own JSON log lines
 * (`jsonPayload.event`: ws_auth, ws_close, store_unavailable, ticket_issued;
 * docs/protocol.md §6) and of Cloud Run's request log (internal event
 * publishes), plus the exclusion that keeps ticket URLs out of the platform's
 * request logs.
 */

export interface GatewayLogMetrics {
  readonly wsAuth: gcp.logging.Metric;
  readonly wsClose: gcp.logging.Metric;
  readonly storeUnavailable: gcp.logging.Metric;
  readonly ticketsIssued: gcp.logging.Metric;
  readonly eventsPublished: gcp.logging.Metric;
}

export interface LogMetricArgs {
  readonly project: string;
  /** SERVICE_ID: prefixes the log-based metric names. */
  readonly serviceId: string;
  readonly serviceName: pulumi.Input<string>;
}

type LabelSpec = Readonly<Record<string, { extractor: string; description: string }>>;

/** `logging.googleapis.com/user/<name>`: how alert policies and the dashboard name a log-based metric. */
export const metricType = (m: gcp.logging.Metric) => pulumi.interpolate`logging.googleapis.com/user/${m.name}`;

const gatewayLogs = (serviceName: pulumi.Input<string>) =>
  pulumi.interpolate`resource.type="cloud_run_revision" AND resource.labels.service_name="${serviceName}"`;

export function gatewayLogMetrics(name: string, args: LogMetricArgs, child: pulumi.CustomResourceOptions): GatewayLogMetrics {
  const logs = gatewayLogs(args.serviceName);
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

  return {
    wsAuth: logMetric("ws_auth", "WebSocket authentication outcomes", pulumi.interpolate`${logs} AND jsonPayload.event="ws_auth"`, {
      outcome: { extractor: "EXTRACT(jsonPayload.outcome)", description: "accepted or rejected" },
      reason: { extractor: "EXTRACT(jsonPayload.reason)", description: "OK, or the error code (TICKET_EXPIRED, ORIGIN_FORBIDDEN, …)" },
    }),
    wsClose: logMetric("ws_close", "WebSocket closes", pulumi.interpolate`${logs} AND jsonPayload.event="ws_close"`, {
      code: { extractor: "EXTRACT(jsonPayload.code)", description: "The close code (4401, 4012, 1011, …; a client's own codes in buckets)" },
      reason: { extractor: "EXTRACT(jsonPayload.reason)", description: "The close reason (the error code's name)" },
      // A client chooses its close code too: only closed_by="server" is the gateway's word.
      closed_by: { extractor: "EXTRACT(jsonPayload.closed_by)", description: "server or client: who closed" },
    }),
    storeUnavailable: logMetric(
      "store_unavailable",
      "Ticket store unreachable",
      pulumi.interpolate`${logs} AND jsonPayload.event="store_unavailable" AND severity>=ERROR`,
      { operation: { extractor: "EXTRACT(jsonPayload.operation)", description: "The operation (route) that could not reach the store" } },
    ),
    ticketsIssued: logMetric("tickets_issued", "WebSocket tickets issued", pulumi.interpolate`${logs} AND jsonPayload.event="ticket_issued"`, {}),
    // Cloud Run's request log has one entry per request, whatever the gateway's log level.
    eventsPublished: logMetric(
      "events_published",
      "Agent events published through the internal API",
      pulumi.interpolate`${logs} AND log_id("run.googleapis.com/requests") AND httpRequest.requestMethod="POST" AND httpRequest.requestUrl=~"/internal/v1/users/[^/?]+/events"`,
      { status: { extractor: "EXTRACT(httpRequest.status)", description: "HTTP status (202: accepted and fanned out)" } },
    ),
  };
}

/**
 * The alert policies on log-based metrics wait until Monitoring shows them
 * (infra/metricVisibility.ts); `parent` owns these waits.
 */
export function metricsVisible(name: string, project: string, metrics: GatewayLogMetrics, parent: pulumi.Resource) {
  const visible = (key: string, m: gcp.logging.Metric) =>
    new MetricVisible(`${name}-${key}-visible`, { project, metricType: metricType(m) }, { parent, dependsOn: [m] });
  return {
    wsAuth: visible("ws-auth", metrics.wsAuth),
    wsClose: visible("ws-close", metrics.wsClose),
    storeUnavailable: visible("store-unavailable", metrics.storeUnavailable),
  };
}

/**
 * The gateway redacts `?ticket=` from its own log lines, but the load
 * balancer's and Cloud Run's request logs record full URLs. A ticket is
 * single-use and lives 30 s, yet "no ticket in any log" must hold for the
 * platform's logs too: drop those request entries before they are stored.
 * A project exclusion applies to the _Default sink only: a sink added later
 * (an export) still gets them unless it excludes them too (docs/operations.md).
 * The gateway's own ws_auth/ws_close lines carry everything on-call needs.
 */
export function ticketUrlExclusion(name: string, args: LogMetricArgs, child: pulumi.CustomResourceOptions): gcp.logging.ProjectExclusion {
  return new gcp.logging.ProjectExclusion(
    `${name}-ticket-urls`,
    {
      name: `${args.serviceId}-ticket-urls`,
      description: "Request log entries whose URL carries a WebSocket ticket (/ws?ticket=…)",
      filter: pulumi.interpolate`(resource.type="http_load_balancer" OR (${gatewayLogs(args.serviceName)} AND log_id("run.googleapis.com/requests"))) AND httpRequest.requestUrl=~"[?&]ticket="`,
    },
    child,
  );
}
