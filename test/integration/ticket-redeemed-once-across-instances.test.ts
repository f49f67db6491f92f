import { afterAll, beforeAll, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";

let redis: RedisServerHandle;
let a: TestGateway;
let b: TestGateway;
beforeAll(async () => {
  redis = await startRedis();
  [a, b] = await Promise.all([startGateway({ env: { REDIS_URL: redis.url } }), startGateway({ env: { REDIS_URL: redis.url } })]);
});
afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await redis?.stop();
});

it("lets exactly one of 200 concurrent sockets, across two instances, redeem one ticket; the rest get 4401 TICKET_USED", async () => {
  const ticket = await ticketFor(a, "racer");
  const clients = Array.from({ length: 200 }, (_, i) => new TestClient(`${(i % 2 ? a : b).wsUrl}/ws?ticket=${ticket}`));
  await Promise.all(clients.map((c) => c.opened));
  const outcomes = await Promise.all(
    clients.map(async (c) => {
      const first = await c.waitFor(() => true);
      return first.type === "connection_established" ? "connected" : (first.code as string);
    }),
  );
  expect(outcomes.filter((o) => o === "connected")).toHaveLength(1);
  expect(outcomes.filter((o) => o === "TICKET_USED")).toHaveLength(199);
  const closes = await Promise.all(clients.filter((_, i) => outcomes[i] !== "connected").map((c) => c.closed));
  expect(closes.every((c) => c.code === 4401 && c.reason === "TICKET_USED")).toBe(true);
  for (const c of clients) c.close();
});
