/**
 * The secret keys of the stack configuration (`pulumi config set --secret`).
 * Each value is read here only to check it, then wrapped in `pulumi.secret`
 * at once, so it never appears in plain text in the state or logs. The
 * length and key-format rules are the gateway's own (service/src/settings.ts).
 */
import * as pulumi from "@pulumi/pulumi";
import { isWebhookSecret, MIN_SECRET_BYTES } from "../service/src/settings.js";
import { StackConfigError, type ConfigSource } from "./configReaders.js";
import type { StackSecrets } from "./configTypes.js";

export function parseStackSecrets(get: ConfigSource, stack: string): StackSecrets {
  const problems: string[] = [];
  const check = (key: string, value: string | undefined, isRequired: boolean): pulumi.Output<string> | undefined => {
    if (value === undefined || value.trim() === "") {
      if (isRequired) problems.push(`${key} is required: pulumi config set --secret ${key} <value> (shared with the auth service)`);
      return undefined;
    }
    if (Buffer.byteLength(value) < MIN_SECRET_BYTES) problems.push(`${key} must be at least ${MIN_SECRET_BYTES} bytes long (the gateway refuses shorter keys)`);
    return pulumi.secret(value);
  };
  const jwtSecretKey = check("jwtSecretKey", get("jwtSecretKey"), true);
  const jwtSecretKeyPrevious = check("jwtSecretKeyPrevious", get("jwtSecretKeyPrevious"), false);
  const serviceSecret = check("serviceSecret", get("serviceSecret"), false);
  const serviceSecretPrevious = check("serviceSecretPrevious", get("serviceSecretPrevious"), false);
  const webhookSecret = get("agentWebhookSecret")?.trim() || undefined;
  if (webhookSecret !== undefined && !isWebhookSecret(webhookSecret)) {
    problems.push("agentWebhookSecret must be whsec_ followed by the base64 of 24 to 64 random bytes (or unset: one is generated)");
  }
  if (problems.length > 0 || jwtSecretKey === undefined) throw new StackConfigError(stack, problems);
  return {
    jwtSecretKey,
    jwtSecretKeyPrevious,
    serviceSecret,
    serviceSecretPrevious,
    agentWebhookSecret: webhookSecret === undefined ? undefined : pulumi.secret(webhookSecret),
  };
}
