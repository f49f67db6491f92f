/**
 * The gateway's Cloud Monitoring dashboard, as the JSON the Dashboards API
 * takes, built from plain strings (the service name and the metric types)
 * once Pulumi has resolved them.
 */

export interface DashboardInputs {
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

/** A line chart of `series`, each aligned per minute (a rate, unless the series says otherwise). */
function chart(title: string, series: readonly Series[], unit = ""): Record<string, unknown> {
  return {
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
  };
}

/** The dashboard's JSON (https://cloud.google.com/monitoring/api/ref_v3/rest/v1/projects.dashboards). */
export function gatewayDashboard(d: DashboardInputs): Record<string, unknown> {
  const onRun = `resource.type="cloud_run_revision"`;
  const service = `resource.label.service_name="${d.service}"`;
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
