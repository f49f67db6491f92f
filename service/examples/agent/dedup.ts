import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";

/**
 * How the example agent remembers which webhook ids (= chat message ids) it
 * has taken, so that a hand-off the gateway repeats (the client resent the
 * message after a timeout, or after the agent crashed before answering) runs
 * once.
 *
 * A claim names the process that made it (`bootId`). A claim of another,
 * dead process is taken over at once; a claim of this process that has not
 * started yet is a duplicate arriving while the first is still in hand, and is
 * answered "retry later" (503). Once the run has started the id is "started"
 * for good (until it expires): every later copy is answered 200 and not run.
 *
 * Memory (one process, `npm run dev`) or Redis (survives a restart of the
 * agent: the integration test kills it and brings it back).
 */
export type ClaimResult = "claimed" | "started" | "busy";

export interface Dedup {
  claim(webhookId: string): Promise<ClaimResult>;
  markStarted(webhookId: string): Promise<void>;
  release(webhookId: string): Promise<void>;
  close(): Promise<void>;
}

/** How long a webhook id is remembered; the gateway's resends come within minutes. */
const REMEMBER_MS = 24 * 3600_000;

export function createMemoryDedup(): Dedup {
  const seen = new Map<string, { state: "claimed" | "started"; at: number }>();
  return {
    async claim(id) {
      const entry = seen.get(id);
      if (entry !== undefined && Date.now() - entry.at < REMEMBER_MS) return entry.state === "started" ? "started" : "busy";
      seen.set(id, { state: "claimed", at: Date.now() });
      return "claimed";
    },
    async markStarted(id) {
      seen.set(id, { state: "started", at: Date.now() });
      // Oldest first: a Map keeps insertion order, so the bound drops the oldest ids.
      for (const [key] of seen) {
        if (seen.size <= 100_000) break;
        seen.delete(key);
      }
    },
    async release(id) {
      if (seen.get(id)?.state === "claimed") seen.delete(id);
    },
    async close() {},
  };
}

// KEYS: the id's key. ARGV: this boot's id, ttl ms. Value: "started", or the claiming boot's id.
const CLAIM = `
  local v = redis.call('GET', KEYS[1])
  if v == 'started' then return 'started' end
  if v == ARGV[1] then return 'busy' end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'claimed'`;
// KEYS: the id's key. ARGV: this boot's id. Only this boot's own, unstarted claim is dropped.
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end`;

export function createRedisDedup(url: string, prefix = "agent-example:webhook:"): Dedup {
  const bootId = randomUUID();
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: false });
  redis.on("error", () => undefined); // a failed call rejects; the webhook then answers 503 and the gateway's client resends
  const key = (id: string) => prefix + id;
  return {
    async claim(id) {
      return (await redis.eval(CLAIM, 1, key(id), bootId, REMEMBER_MS)) as ClaimResult;
    },
    async markStarted(id) {
      await redis.set(key(id), "started", "PX", REMEMBER_MS);
    },
    async release(id) {
      await redis.eval(RELEASE, 1, key(id), bootId);
    },
    async close() {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
