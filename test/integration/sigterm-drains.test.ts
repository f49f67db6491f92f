import net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { spawnGateway } from "../support/process.js";
import { ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET, TestClient, ticketFor } from "../support/gateway.js";

// The real process, as Cloud Run runs it: SIGTERM, then about 10 s before SIGKILL.
let redis: RedisServerHandle;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

it("on SIGTERM with 200 open sockets, every client sees 4012 SERVICE_RESTART, none 1006, and the process exits 0 within SHUTDOWN_GRACE_MS", async () => {
  const gw = await spawnGateway({
    NODE_ENV: "production",
    REDIS_URL: redis.url,
    ALLOWED_ORIGINS: ORIGIN,
    JWT_SECRET_KEY: TEST_JWT_KEY,
    SERVICE_SECRET: TEST_SERVICE_SECRET,
    SHUTDOWN_GRACE_MS: "8000",
  });
  const clients: TestClient[] = [];
  for (let batch = 0; batch < 10; batch++) {
    const tickets = await Promise.all(Array.from({ length: 20 }, (_, i) => ticketFor(gw, `drain-user-${batch}-${i}`)));
    clients.push(...(await Promise.all(tickets.map((t) => TestClient.connect(gw, t)))));
  }
  await Promise.all(clients.map((c) => c.waitForType("connection_established")));

  // /readyz answers 503 once draining has begun; a socket that never answers the close keeps the drain open long enough to look.
  const stuck = await TestClient.connect(gw, await ticketFor(gw, "drain-stuck"));
  await stuck.waitForType("connection_established");
  (stuck.socket as unknown as { _socket: { pause(): void } })._socket.pause();

  const sent = Date.now();
  gw.child.kill("SIGTERM");
  const closes = await Promise.all(clients.map((c) => c.closed));
  const ready = await fetch(`${gw.url}/readyz`).then((r) => r.status, () => "refused");
  const { code, afterMs } = await gw.exited(sent);

  expect(closes.filter((c) => c.code === 4012 && c.reason === "SERVICE_RESTART")).toHaveLength(200);
  expect(closes.filter((c) => c.code === 1006)).toHaveLength(0);
  expect(clients.every((c) => c.frames.some((f) => f.type === "error" && f.code === "SERVICE_RESTART" && f.retry === true))).toBe(true);
  expect(ready).toBe(503);
  expect(code).toBe(0);
  expect(afterMs).toBeLessThan(8000);
  expect(gw.stdout.some((l) => l.includes('"event":"stopped"'))).toBe(true);
}, 60_000);

it("on SIGTERM, a connection that never sent a request (a browser's preconnect) does not hold the process past the grace period", async () => {
  const gw = await spawnGateway({ REDIS_URL: redis.url, ALLOWED_ORIGINS: ORIGIN, JWT_SECRET_KEY: TEST_JWT_KEY, SERVICE_SECRET: TEST_SERVICE_SECRET });
  const { port } = new URL(gw.url);
  const idle = net.connect(Number(port), "127.0.0.1");
  await new Promise((resolve) => idle.once("connect", resolve));
  const sent = Date.now();
  gw.child.kill("SIGTERM");
  const { code, afterMs } = await gw.exited(sent);
  idle.destroy();
  expect(code).toBe(0);
  expect(afterMs).toBeLessThan(3000);
}, 30_000);
