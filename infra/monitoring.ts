import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { gatewayAlertPolicies, type AlertName } from "./alertPolicies.js";
import { gatewayDashboard } from "./dashboard.js";
import { gatewayLogMetrics, metricsVisible, metricType, ticketUrlExclusion, type GatewayLogMetrics } from "./logMetrics.js";
import type { MetricVisible } from "./metricVisibility.js";

export { MIN_CONDITION_DURATION, RUNBOOK_ANCHORS, type AlertName } from "./alertPolicies.js";

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

/**
 * What on-call sees and is woken by: log-based metrics on the gateway's own
 * log lines and Cloud Run's request log (./logMetrics.ts), alert policies
 * that link the runbook (./alertPolicies.ts), a dashboard (./dashboard.ts)
 * and an uptime check. The uptime check fetches /health (never /healthz:
 * Cloud Run's front end answers paths ending in `z` itself,
 * infra/loadBalancer.ts) through the load balancer, so DNS, the certificate,
 * the load balancer and Cloud Run are checked together, the way a browser
 * meets them.
 */
export class Monitoring extends pulumi.ComponentResource {
  readonly notificationChannels: readonly gcp.monitoring.NotificationChannel[];
  readonly metrics: GatewayLogMetrics;
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

    this.notificationChannels = args.alertEmails.map(
      (email, i) =>
        new gcp.monitoring.NotificationChannel(
          `${name}-email-${i}`,
          { type: "email", displayName: `Chat gateway on-call: ${email}`, labels: { email_address: email } },
          child,
        ),
    );
    this.metrics = gatewayLogMetrics(name, args, child);
    this.ticketUrlExclusion = ticketUrlExclusion(name, args, child);
    this.metricsVisible = metricsVisible(name, args.project, this.metrics, this);
    this.uptimeCheck = healthUptimeCheck(name, args, child);
    this.alertPolicies = gatewayAlertPolicies(
      name,
      {
        ...args,
        channels: this.notificationChannels.map((c) => c.name),
        metrics: this.metrics,
        visible: this.metricsVisible,
        uptimeCheckId: this.uptimeCheck.uptimeCheckId,
      },
      this,
      inherited,
    );
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

/** https://<domain>/health every minute from Google's checkers, through the load balancer. */
function healthUptimeCheck(name: string, args: MonitoringArgs, child: pulumi.CustomResourceOptions): gcp.monitoring.UptimeCheckConfig {
  return new gcp.monitoring.UptimeCheckConfig(
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
}
