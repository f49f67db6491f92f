import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { SECRETS, secretId, type SecretSpec } from "../service/src/secretNames.js";

/** The id of a secret in service/src/secretNames.ts, e.g. `jwt-secret-key`. */
export type SecretKey = (typeof SECRETS)[number]["id"];

export interface SecretEntry {
  readonly spec: SecretSpec;
  readonly secret: gcp.secretmanager.Secret;
  /** Absent for an optional secret without a value (e.g. no previous JWT key outside a rotation). */
  readonly version: gcp.secretmanager.SecretVersion | undefined;
}

export interface SecretsArgs {
  /** SERVICE_ID: every secret is named `${serviceId}-${spec.id}`, as the service reads it. */
  readonly serviceId: string;
  /** The value of each secret's version. A required secret needs a value or a place in `generate`. */
  readonly values: Partial<Record<SecretKey, pulumi.Input<string> | undefined>>;
  /** Secrets whose value this program generates (48 random alphanumerics), e.g. `service-secret`. */
  readonly generate?: readonly SecretKey[];
  readonly deletionProtection: boolean;
}

/**
 * Every secret the gateway reads at startup, and no other, exists in Secret
 * Manager under exactly the id the service computes from the same list
 * (service/src/secretNames.ts), and every required one has a version. The list
 * is imported, not copied, so a secret added to the service is deployed by the
 * next `pulumi up`, or the program stops and names the value it lacks. Access
 * is granted elsewhere (infra/service.ts), per secret, to the service's own
 * identity only.
 *
 * A new value creates a new version; the replaced one is disabled, not
 * destroyed, so a bad rotation can be undone by re-enabling it.
 */
export class Secrets extends pulumi.ComponentResource {
  readonly entries: readonly SecretEntry[];
  /** Secret ids in SECRETS order, e.g. `chat-gateway-jwt-secret-key`. */
  readonly secretIds: pulumi.Output<string[]>;

  constructor(name: string, args: SecretsArgs, opts?: pulumi.ComponentResourceOptions) {
    // Checked before anything is registered.
    const generate = new Set<string>(args.generate ?? []);
    const missing = SECRETS.filter((spec) => spec.required && args.values[spec.id] === undefined && !generate.has(spec.id));
    if (missing.length > 0) {
      throw new Error(`Secrets: no value for the required secret(s) ${missing.map((s) => `${s.id} (${s.env})`).join(", ")}`);
    }
    const unknown = [...Object.keys(args.values), ...generate].filter((id) => !SECRETS.some((s) => s.id === id));
    if (unknown.length > 0) throw new Error(`Secrets: ${unknown.join(", ")} is not a secret the service reads (service/src/secretNames.ts)`);

    super("chat-gateway:infra:Secrets", name, {}, opts);
    const child = { parent: this, dependsOn: opts?.dependsOn };

    this.entries = SECRETS.map((spec): SecretEntry => {
      const secret = new gcp.secretmanager.Secret(
        `${name}-${spec.id}`,
        {
          secretId: secretId(args.serviceId, spec),
          replication: { auto: {} },
          labels: { service: args.serviceId, env_name: spec.env.toLowerCase() },
          annotations: { description: spec.description },
          deletionProtection: args.deletionProtection,
        },
        child,
      );
      let value: pulumi.Input<string> | undefined = args.values[spec.id];
      if (value === undefined && generate.has(spec.id)) {
        value = new random.RandomPassword(`${name}-${spec.id}-value`, { length: 48, special: false }, { parent: this }).result;
      }
      const version =
        value === undefined
          ? undefined
          : new gcp.secretmanager.SecretVersion(
              `${name}-${spec.id}-version`,
              {
                secret: secret.id,
                secretData: pulumi.secret(value),
                // A replaced value disables the old version instead of destroying it.
                deletionPolicy: "DISABLE",
              },
              { parent: this },
            );
      return { spec, secret, version };
    });

    this.secretIds = pulumi.output(this.entries.map((e) => e.secret.secretId));
    this.registerOutputs({ secretIds: this.secretIds });
  }

  /** The entry of one secret, by its SECRETS id. */
  entry(id: SecretKey): SecretEntry {
    const found = this.entries.find((e) => e.spec.id === id);
    if (!found) throw new Error(`Secrets: no secret ${id}`);
    return found;
  }
}
