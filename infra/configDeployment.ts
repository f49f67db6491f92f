/**
 * The keys that say what is deployed where and who may talk to it: project,
 * region, service id, image, domain, alert recipients, browser origins and
 * the agent webhook. The origin and webhook rules are the service's own
 * (service/src/settings.ts), so the stack refuses what the gateway would.
 */
import { isExactOrigin, isLoopbackHost } from "../service/src/settings.js";
import type { StackReaders } from "./configReaders.js";
import { DEFAULT_RUNBOOK_BASE_URL, type StackConfig } from "./configTypes.js";

export type DeploymentStackConfig = Pick<
  StackConfig,
  "project" | "region" | "serviceId" | "image" | "domain" | "alertEmails" | "allowedOrigins" | "agentWebhookUrl" | "runbookBaseUrl"
>;

export function readDeploymentConfig(r: StackReaders): DeploymentStackConfig {
  const { problems } = r;
  const project = r.matching(
    "project",
    r.required("project", "the GCP project id, e.g. acme-chat-prod"),
    /^[a-z][a-z0-9-]{4,28}[a-z0-9]$/,
    "a GCP project id (6-30 lower-case letters, digits, dashes) like acme-chat-prod",
  );
  const region = r.matching("region", r.required("region", "the GCP region, e.g. europe-west1"), /^[a-z]+-[a-z]+\d+$/, "a GCP region like europe-west1");

  // 20 characters at most: the Redis instance id (40 max) is `${serviceId}-redis-` plus
  // Pulumi's 7-character suffix, and the service account id (30 max) is `${serviceId}-run`.
  const serviceId = r.matching(
    "serviceId",
    r.str("serviceId") ?? "chat-gateway",
    /^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$/,
    "lower-case letters, digits and dashes, at most 20 characters, e.g. chat-gateway (it names the Cloud Run service, the secrets and the service account)",
  );

  const image = r.required("image", "the container image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/gateway@sha256:…");
  const imageIssue = image === "" ? undefined : imageProblem(image, r.production);
  if (imageIssue !== undefined) problems.push(imageIssue);

  const domain = r.matching(
    "domain",
    r.required("domain", "the public host name, e.g. chat.example.com"),
    /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/,
    "a lower-case host name without scheme or path, like chat.example.com",
  );

  const alertEmails = r.list("alertEmails");
  if (alertEmails.length === 0 && r.str("alertEmails") === undefined) problems.push("alertEmails is required (at least one address that receives alerts, e.g. [oncall@example.com])");
  for (const email of alertEmails) {
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) problems.push(`alertEmails entry "${email}" is not an e-mail address like oncall@example.com`);
  }

  const allowedOrigins = r.list("allowedOrigins");
  if (allowedOrigins.length === 0 && r.str("allowedOrigins") === undefined) {
    problems.push("allowedOrigins is required (the exact origins of the chat web app, e.g. [https://app.example.com]; the service refuses to start without them in production)");
  }
  for (const origin of allowedOrigins) {
    if (!isExactOrigin(origin)) problems.push(`allowedOrigins entry "${origin}" is not an exact origin like https://chat.example.com`);
    else if (r.production && !origin.startsWith("https://")) problems.push(`allowedOrigins entry "${origin}" must use https in a production stack`);
  }

  const agentWebhookUrl = r.str("agentWebhookUrl");
  const webhookIssue = agentWebhookUrl === undefined ? undefined : webhookUrlProblem(agentWebhookUrl);
  if (webhookIssue !== undefined) problems.push(`agentWebhookUrl ${webhookIssue}`);

  const runbookBaseUrl = r.str("runbookBaseUrl") ?? DEFAULT_RUNBOOK_BASE_URL;
  if (!isHttpsWithoutFragment(runbookBaseUrl)) {
    problems.push(`runbookBaseUrl must be an https URL of docs/operations.md without a #fragment, like ${DEFAULT_RUNBOOK_BASE_URL}; got "${runbookBaseUrl}"`);
  }
  return { project, region, serviceId, image, domain, alertEmails, allowedOrigins, agentWebhookUrl, runbookBaseUrl };
}

function isHttpsWithoutFragment(raw: string): boolean {
  try {
    const url = new URL(raw);
    return url.protocol === "https:" && url.hash === "";
  } catch {
    return false;
  }
}

/** Why `image` is not a reproducible registry reference (for this stack), or undefined. */
function imageProblem(image: string, production: boolean): string | undefined {
  if (!/^[a-z0-9.-]+(?::\d+)?\/[a-z0-9._\/-]+(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$/.test(image)) {
    return `image must be a registry image reference like europe-west1-docker.pkg.dev/PROJECT/REPO/gateway:TAG; got "${image}"`;
  }
  if (!/[:@][\w.:-]+$/.test(image.slice(image.lastIndexOf("/")))) {
    return "image must name a tag or a digest, e.g. …/gateway:0.1.0 or …/gateway@sha256:<64 hex> (an untagged image means :latest, which moves)";
  }
  if (/:latest(?:@|$)/.test(image)) return "image must not use the :latest tag, use e.g. …/gateway:0.1.0 (it moves: revisions would not be reproducible)";
  if (production && !/@sha256:[0-9a-f]{64}$/.test(image)) return "image must be pinned by digest (…@sha256:<64 hex>) in a production stack";
  return undefined;
}

/**
 * Why a webhook URL would be refused by the gateway in production
 * (service/src/configRules.ts), or undefined: https, or plain http to a
 * loopback address only (an agent sidecar in the same instance); no credentials.
 */
function webhookUrlProblem(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "must be a URL like https://agent.example.com/webhook";
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopbackHost(url.hostname))) {
    return "must use https (plain http only to a loopback address, for an agent running as a sidecar in the same instance)";
  }
  if (url.username !== "" || url.password !== "") return "must not carry credentials (the hand-off is signed with the agent webhook secret)";
  return undefined;
}
