/**
 * docs/protocol.md §5 and docs/operations.md "Rotate the service secret":
 * during a rotation the internal API accepts SERVICE_SECRET and
 * SERVICE_SECRET_PREVIOUS, so an agent backend that still sends the old one,
 * and one that already sends the new one, both publish; anything else is 401.
 * Each refusal below is written as the attack it is.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { startGateway, type TestGateway } from "../support/gateway.js";

const OLD = "service-secret-old-0123456789abcdef0123456789";
const NEW = "service-secret-new-0123456789abcdef0123456789";

let redis: RedisServerHandle;
let rotating: TestGateway;
let rotated: TestGateway;

beforeAll(async () => {
  redis = await startRedis();
  rotating = await startGateway({ env: { REDIS_URL: redis.url, SERVICE_SECRET: NEW, SERVICE_SECRET_PREVIOUS: OLD } });
  rotated = await startGateway({ env: { REDIS_URL: redis.url, SERVICE_SECRET: NEW } });
});
afterAll(async () => {
  await Promise.all([rotating?.close(), rotated?.close()]);
  await redis?.stop();
});

function publishWith(gw: TestGateway, authorization: string): Promise<Response> {
  return fetch(`${gw.url}/internal/v1/users/rotation-user/events`, {
    method: "POST",
    headers: { authorization, "x-service-id": "agent-backend", "content-type": "application/json" },
    body: JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t" }),
  });
}

describe("the service secret during a rotation", () => {
  it("accepts the new secret and the previous one", async () => {
    expect((await publishWith(rotating, `Bearer ${NEW}`)).status).toBe(202);
    expect((await publishWith(rotating, `Bearer ${OLD}`)).status).toBe(202);
  });

  it("after the rotation (no SERVICE_SECRET_PREVIOUS), refuses the old secret with 401", async () => {
    expect((await publishWith(rotated, `Bearer ${NEW}`)).status).toBe(202);
    const res = await publishWith(rotated, `Bearer ${OLD}`);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("SERVICE_UNAUTHORIZED");
  });

  const attacks: Array<[string, string]> = [
    ["a prefix of the previous secret", `Bearer ${OLD.slice(0, -1)}`],
    ["the previous secret with a byte appended", `Bearer ${OLD}x`],
    ["the two secrets joined", `Bearer ${NEW}${OLD}`],
    ["the previous secret in another case", `Bearer ${OLD.toUpperCase()}`],
    ["the previous secret without the Bearer scheme", OLD],
    ["an empty bearer", "Bearer "],
  ];
  for (const [name, authorization] of attacks) {
    it(`refuses ${name} with 401, and no log line carries either secret`, async () => {
      const res = await publishWith(rotating, authorization);
      expect(res.status).toBe(401);
      expect(rotating.logs.text).not.toContain(OLD.slice(0, 20));
      expect(rotating.logs.text).not.toContain(NEW.slice(0, 20));
    });
  }

  it("a short SERVICE_SECRET_PREVIOUS is a startup error like any short secret", async () => {
    await expect(startGateway({ env: { REDIS_URL: redis.url, SERVICE_SECRET_PREVIOUS: "short" } })).rejects.toThrow(/SERVICE_SECRET_PREVIOUS must be at least 32 bytes/);
  });
});
