import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { mintToken, startGateway, TestClient, type TestGateway } from "../support/gateway.js";

// The old system grew six ways in besides the ticket. Each must be treated as
// "no ticket": the socket gets 4400 TICKET_MISSING, never a connection.
let redis: RedisServerHandle;
let gw: TestGateway;
let jwt: string;
beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url } });
  jwt = await mintToken({ sub: "legacy-user" });
});
afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

async function expectTicketMissing(client: TestClient) {
  await client.opened;
  const { code, reason } = await client.closed;
  expect(code).toBe(4400);
  expect(reason).toBe("TICKET_MISSING");
  expect(client.frames).toEqual([expect.objectContaining({ type: "error", code: "TICKET_MISSING", fatal: true, retry: true })]);
  expect(client.frames.some((f) => f.type === "connection_established")).toBe(false);
}

describe("the only way in is a ticket", () => {
  it("refuses a bearer token in the upgrade's Authorization header with 4400 TICKET_MISSING", async () => {
    await expectTicketMissing(new TestClient(`${gw.wsUrl}/ws`, { headers: { authorization: `Bearer ${jwt}` } }));
  });

  it("refuses a token in Sec-WebSocket-Protocol (jwt-auth) with 4400 TICKET_MISSING, without echoing the token", async () => {
    const client = new TestClient(`${gw.wsUrl}/ws`, { protocols: ["jwt-auth", jwt] });
    await expectTicketMissing(client);
    expect(client.socket.protocol).toBe("jwt-auth");
  });

  it("refuses ?token=<JWT> with 4400 TICKET_MISSING", async () => {
    await expectTicketMissing(new TestClient(`${gw.wsUrl}/ws?token=${jwt}`));
  });

  const legacyHeaders: Array<[string, string]> = [
    ["X-Test-Type", "E2E"],
    ["X-E2E-Test", "true"],
    ["X-Test-Mode", "true"],
    ["X-Auth-Fast-Path", "enabled"],
  ];
  for (const [name, value] of legacyHeaders) {
    it(`refuses the header ${name}: ${value} (with a valid JWT beside it) with 4400 TICKET_MISSING`, async () => {
      await expectTicketMissing(new TestClient(`${gw.wsUrl}/ws`, { headers: { [name]: value, authorization: `Bearer ${jwt}` } }));
    });
  }

  it("does not take a JWT in place of a ticket (?ticket=<JWT>): 4400 TICKET_MALFORMED", async () => {
    const client = new TestClient(`${gw.wsUrl}/ws?ticket=${jwt}`);
    const { code, reason } = await client.closed;
    expect([code, reason]).toEqual([4400, "TICKET_MALFORMED"]);
  });

  it("answers a plain GET /ws (no upgrade) with 426 UPGRADE_REQUIRED", async () => {
    const res = await fetch(`${gw.url}/ws?ticket=x`);
    expect(res.status).toBe(426);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("UPGRADE_REQUIRED");
  });

  it("logs every refusal as one ws_auth line with its reason", () => {
    const lines = gw.logs.records.filter((r) => r.event === "ws_auth");
    expect(lines.length).toBeGreaterThanOrEqual(8);
    expect(lines.every((l) => l.outcome === "rejected" && typeof l.reason === "string")).toBe(true);
  });
});
