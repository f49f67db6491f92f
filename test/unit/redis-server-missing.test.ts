import { afterEach, expect, it, vi } from "vitest";

const saved = process.env.REDIS_SERVER_BIN;
afterEach(() => {
  if (saved === undefined) delete process.env.REDIS_SERVER_BIN;
  else process.env.REDIS_SERVER_BIN = saved;
  vi.resetModules();
});

it("a machine without redis-server is told how to install it, not that a server 'did not answer'", async () => {
  process.env.REDIS_SERVER_BIN = "/nonexistent/bin/redis-server";
  vi.resetModules();
  const { startRedis } = await import("../support/redis-server.js");
  await expect(startRedis()).rejects.toThrow(/^redis-server is not installed: apt-get install redis-server/);
});
