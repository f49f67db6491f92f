/**
 * What the gateway's Redis ACL user may do, in Redis' ACL rule syntax
 * (https://redis.io/docs/latest/operate/oss_and_stack/management/security/acl/).
 * The Pulumi program puts it into the production cluster's ACL policy
 * (infra/redisCluster.ts), and the store contract suite runs against a local
 * redis-server whose gateway user has exactly these permissions
 * (test/integration/redis-acl.test.ts), so a command the store starts to use
 * and the rule does not allow fails a test here instead of production.
 *
 * Every key and every (sharded) pub/sub channel; every command except the
 * `@dangerous` category (FLUSHALL, CONFIG, KEYS, ACL, DEBUG, …), plus INFO,
 * which is in that category but read-only: ioredis' ready check sends it on
 * every (re)connect, and without it prints an unstructured warning each time.
 *
 * This module has no imports on purpose: the Pulumi program loads it too.
 */
const GATEWAY_REDIS_ACL_PERMISSIONS = "~* &* +@all -@dangerous +info";

/**
 * The whole rule of the gateway's user: enabled, accepting each of the given
 * passwords (two during a rotation, see docs/operations.md), with the
 * permissions above. `resetpass` first, so a password left out is revoked.
 */
export function gatewayAclRule(passwords: readonly string[]): string {
  if (passwords.length === 0) throw new Error("gatewayAclRule: at least one password");
  for (const p of passwords) {
    // A space would end the password and start another rule token.
    if (!/^[A-Za-z0-9_\-.]{16,}$/.test(p)) throw new Error("gatewayAclRule: a password must be 16 or more letters, digits, '_', '-' or '.'");
  }
  return ["on", "resetpass", ...passwords.map((p) => `>${p}`), GATEWAY_REDIS_ACL_PERMISSIONS].join(" ");
}
