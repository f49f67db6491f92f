import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { metricType, type GatewayLogMetrics } from "./logMetrics.js";

/**
 * The alert policies that wake on-call. Each notifies every e-mail channel
 * and links its section of the runbook (docs/operations.md).
 */

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

export interface AlertInputs {
  readonly serviceId: string;
  readonly serviceName: pulumi.Input<string>;
  readonly domain: string;
  /** The URL of docs/operations.md; each alert links `${runbookBaseUrl}#<anchor>`. */
  readonly runbookBaseUrl: string;
  readonly thresholds: { readonly authFailureRatio: number; readonly http5xxRatio: number; readonly internalErrorCloses: number };
  readonly channels: readonly pulumi.Input<string>[];
  readonly metrics: GatewayLogMetrics;
  /** The waits for Monitoring to show each log-based metric an alert reads. */
  readonly visible: Readonly<Record<"wsAuth" | "wsClose" | "storeUnavailable", pulumi.Resource>>;
  readonly uptimeCheckId: pulumi.Input<string>;
}

interface AlertSpec {
  readonly displayName: string;
  readonly severity: "CRITICAL" | "ERROR" | "WARNING";
  /** What firing means, for the notification. */
  readonly meaning: string;
  readonly condition: gcp.types.input.monitoring.AlertPolicyConditionConditionThreshold;
  readonly waitFor?: readonly pulumi.Resource[];
}

const sum = (alignmentPeriod: string) => [{ alignmentPeriod, perSeriesAligner: "ALIGN_DELTA", crossSeriesReducer: "REDUCE_SUM" }];
const pct = (ratio: number) => `${+(ratio * 100).toFixed(3)}%`;
const INACTIVE_WHEN_NO_DATA = { duration: MIN_CONDITION_DURATION, evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE" } as const;

export function gatewayAlertPolicies(
  name: string,
  a: AlertInputs,
  parent: pulumi.Resource,
  dependsOn: readonly pulumi.Resource[],
): Record<AlertName, gcp.monitoring.AlertPolicy> {
  const specs: Record<AlertName, AlertSpec> = { ...ratioAlerts(a), ...countAlerts(a) };
  const runbook = (key: AlertName) => `${a.runbookBaseUrl}#${RUNBOOK_ANCHORS[key]}`;
  const policy = (key: AlertName, spec: AlertSpec) =>
    new gcp.monitoring.AlertPolicy(
      `${name}-${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
      {
        displayName: `Chat gateway: ${spec.displayName}`,
        combiner: "OR",
        severity: spec.severity,
        notificationChannels: [...a.channels],
        conditions: [{ displayName: spec.displayName, conditionThreshold: spec.condition }],
        alertStrategy: { autoClose: "1800s" },
        documentation: {
          mimeType: "text/markdown",
          subject: `Chat gateway: ${spec.displayName}`,
          content: `${spec.meaning}\n\nRunbook: [${spec.displayName}](${runbook(key)})`,
          links: [{ displayName: "Runbook", url: runbook(key) }],
        },
      },
      { parent, dependsOn: [...dependsOn, ...(spec.waitFor ?? [])] },
    );
  return Object.fromEntries(Object.entries(specs).map(([key, spec]) => [key, policy(key as AlertName, spec)])) as Record<AlertName, gcp.monitoring.AlertPolicy>;
}

/** The alerts on a share of all requests: rejected authentications, 5xx responses. */
function ratioAlerts(a: AlertInputs): Record<"authFailures" | "http5xx", AlertSpec> {
  const wsAuth = metricType(a.metrics.wsAuth);
  const runRequests = pulumi.interpolate`metric.type="run.googleapis.com/request_count" AND resource.type="cloud_run_revision" AND resource.label.service_name="${a.serviceName}"`;
  return {
    authFailures: {
      displayName: `WebSocket authentication failures above ${pct(a.thresholds.authFailureRatio)}`,
      severity: "WARNING",
      meaning: `More than ${pct(a.thresholds.authFailureRatio)} of WebSocket authentications were rejected over 5 minutes (log metric ${a.serviceId}/ws_auth, outcome="rejected").`,
      condition: {
        filter: pulumi.interpolate`metric.type="${wsAuth}" AND resource.type="cloud_run_revision" AND metric.label.outcome="rejected"`,
        aggregations: sum("300s"),
        denominatorFilter: pulumi.interpolate`metric.type="${wsAuth}" AND resource.type="cloud_run_revision"`,
        denominatorAggregations: sum("300s"),
        comparison: "COMPARISON_GT",
        thresholdValue: a.thresholds.authFailureRatio,
        ...INACTIVE_WHEN_NO_DATA,
      },
      waitFor: [a.visible.wsAuth],
    },
    http5xx: {
      displayName: `5xx responses above ${pct(a.thresholds.http5xxRatio)}`,
      severity: "ERROR",
      meaning: `More than ${pct(a.thresholds.http5xxRatio)} of the Cloud Run service's requests answered 5xx over 5 minutes (run.googleapis.com/request_count, response_code_class="5xx").`,
      condition: {
        filter: pulumi.interpolate`${runRequests} AND metric.label.response_code_class="5xx"`,
        aggregations: sum("300s"),
        denominatorFilter: runRequests,
        denominatorAggregations: sum("300s"),
        comparison: "COMPARISON_GT",
        thresholdValue: a.thresholds.http5xxRatio,
        ...INACTIVE_WHEN_NO_DATA,
      },
    },
  };
}

/** The alerts on counts: store unreachable, 1011 closes, failed uptime checks. */
function countAlerts(a: AlertInputs): Record<"storeUnavailable" | "internalErrorCloses" | "uptime", AlertSpec> {
  return {
    storeUnavailable: {
      displayName: "Ticket store unavailable",
      severity: "CRITICAL",
      meaning: `The gateway could not reach Redis (log lines event="store_unavailable", log metric ${a.serviceId}/store_unavailable): tickets are refused with 503 TICKET_STORE_UNAVAILABLE and new WebSockets close with 4013.`,
      condition: {
        filter: pulumi.interpolate`metric.type="${metricType(a.metrics.storeUnavailable)}" AND resource.type="cloud_run_revision"`,
        aggregations: sum("60s"),
        comparison: "COMPARISON_GT",
        thresholdValue: 0,
        ...INACTIVE_WHEN_NO_DATA,
      },
      waitFor: [a.visible.storeUnavailable],
    },
    internalErrorCloses: {
      displayName: `More than ${a.thresholds.internalErrorCloses} WebSocket closes with 1011 in 5 minutes`,
      severity: "ERROR",
      meaning: `The gateway closed WebSockets with 1011 INTERNAL_ERROR (an unexpected server fault) more than ${a.thresholds.internalErrorCloses} times in 5 minutes (log metric ${a.serviceId}/ws_close, code="1011", closed_by="server"; a client closing with 1011 does not count).`,
      condition: {
        filter: pulumi.interpolate`metric.type="${metricType(a.metrics.wsClose)}" AND resource.type="cloud_run_revision" AND metric.label.code="1011" AND metric.label.closed_by="server"`,
        aggregations: sum("300s"),
        comparison: "COMPARISON_GT",
        thresholdValue: a.thresholds.internalErrorCloses,
        ...INACTIVE_WHEN_NO_DATA,
      },
      waitFor: [a.visible.wsClose],
    },
    uptime: {
      displayName: `Uptime check of https://${a.domain}/health failing`,
      severity: "CRITICAL",
      meaning: `https://${a.domain}/health failed from more than one checker region for 2 minutes (monitoring.googleapis.com/uptime_check/check_passed). Browsers probably cannot reach the gateway.`,
      condition: {
        filter: pulumi.interpolate`metric.type="monitoring.googleapis.com/uptime_check/check_passed" AND resource.type="uptime_url" AND metric.label.check_id="${a.uptimeCheckId}"`,
        aggregations: [
          { alignmentPeriod: "60s", perSeriesAligner: "ALIGN_NEXT_OLDER", crossSeriesReducer: "REDUCE_COUNT_FALSE", groupByFields: ["resource.label.host"] },
        ],
        comparison: "COMPARISON_GT",
        thresholdValue: 1,
        duration: "120s",
        // No data from the checker is itself a failure.
        evaluationMissingData: "EVALUATION_MISSING_DATA_ACTIVE",
      },
    },
  };
}
