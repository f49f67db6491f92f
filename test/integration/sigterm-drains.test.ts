import net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { spawnGateway } from "../support/process.js";
import { ORIGIN, startGateway, TEST_JWT_KEY, TEST_SERVICE_SECRET, TestClient, ticketFor } from "../support/gateway.js";
import { createMemoryStore } from "../../service/src/plugins/store/memory.js";
import type { Store } from "../../service/src/plugins/store/types.js";

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

// The review of the one-round-trip connect found it: the drain closed only the
// sockets registered when it began, so a connect whose ticket was still being
// checked then got connection_established afterwards and held the close open.
it("a connect whose ticket is being checked when the drain begins is told 4012 SERVICE_RESTART, and the close finishes", async () => {
  const real = createMemoryStore();
  let delayMs = 0;
  const store: Store = {
    ...real,
    async admit(request) {
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      return real.admit(request);
    },
  };
  const gw = await startGateway({ store });
  try {
    const ticket = await ticketFor(gw, "drain-late");
    delayMs = 300;
    const late = await TestClient.connect(gw, ticket); // upgraded; its admission waits 300 ms on the store
    const closing = gw.close(); // the drain begins meanwhile
    expect((await late.closed).code).toBe(4012);
    expect(late.frames.map((f) => f.type)).toEqual(["error"]);
    expect(late.frames[0]).toMatchObject({ code: "SERVICE_RESTART", fatal: true });
    await closing;
  } finally {
    await real.close();
  }
});
