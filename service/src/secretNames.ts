/**
 * The secrets the gateway reads from Secret Manager, in one list that both the
 * service (service/src/secrets.ts) and the Pulumi program (infra/secrets.ts)
 * import, so the names deployed and the names read can never drift apart.
 * (The old system returned 403s for days because four secrets were simply
 * not deployed; here a missing one stops startup and names itself.)
 *
 * This module has no imports on purpose: the Pulumi program loads it too.
 */
export interface SecretSpec {
  /** The environment variable (and config setting) the value fills. */
  readonly env: string;
  /** The Secret Manager secret id, after the `${SERVICE_ID}-` prefix. */
  readonly id: string;
  /** Required in `SECRETS_SOURCE=gcp`: a missing version stops startup. */
  readonly required: boolean;
  readonly description: string;
}

export const SECRETS = [
  {
    env: "JWT_SECRET_KEY",
    id: "jwt-secret-key",
    required: true,
    description: "HS256 key that verifies user JWTs (shared with the auth service)",
  },
  {
    env: "JWT_SECRET_KEY_PREVIOUS",
    id: "jwt-secret-key-previous",
    required: false,
    description: "The previous HS256 key, accepted during a key rotation; add a version only while rotating",
  },
  {
    env: "SERVICE_SECRET",
    id: "service-secret",
    required: true,
    description: "Bearer secret of the internal API that agent backends call",
  },
  {
    env: "SERVICE_SECRET_PREVIOUS",
    id: "service-secret-previous",
    required: false,
    description: "The previous internal API secret, accepted while agent backends move to the new one; add a version only while rotating",
  },
  {
    env: "REDIS_PASSWORD",
    id: "redis-auth-string",
    required: true,
    description: "Memorystore AUTH string (an instance), or the password of the gateway's ACL user (a cluster; REDIS_USERNAME names it)",
  },
  {
    env: "REDIS_TLS_CA",
    id: "redis-tls-ca",
    required: true,
    description: "PEM of Memorystore's server CA, for in-transit encryption",
  },
  {
    env: "AGENT_WEBHOOK_SECRET",
    id: "agent-webhook-secret",
    // Required exactly when AGENT_WEBHOOK_URL is set (secrets.ts): a gateway without an agent backend needs no key.
    required: false,
    description: "whsec_ key that signs chat-message hand-offs to the agent backend (Standard Webhooks); shared with the agent backend",
  },
] as const satisfies readonly SecretSpec[];

export type SecretEnvName = (typeof SECRETS)[number]["env"];

/** `chat-gateway-jwt-secret-key`: the id of the secret in Secret Manager. */
export function secretId(serviceId: string, spec: Pick<SecretSpec, "id">): string {
  return `${serviceId}-${spec.id}`;
}

/** The resource name the service reads at startup. */
export function secretVersionName(project: string, serviceId: string, spec: Pick<SecretSpec, "id">): string {
  return `projects/${project}/secrets/${secretId(serviceId, spec)}/versions/latest`;
}
