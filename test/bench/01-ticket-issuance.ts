/**
 * Bench 1: ticket issuance (rate limits in Redis, JWT verify, ticket write)
 * against a bare Fastify JSON POST route, closed loop at a fixed concurrency.
 */
import { startRedis } from "../support/redis-server.js";
import { gatewayEnv, gatewayNodeArgs, ORIGIN, TEST_JWT_KEY, users, type BenchOptions, type BenchResult } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { cpuMeter, held, redisPid, spawnGatewayProc, spawnHelperServer } from "./lib/procs.js";
import { alternate, pairedRatio, spread } from "./lib/rounds.js";
import { fmt, table } from "./lib/stats.js";
import type { HttpLoadResult } from "./load/http-load.js";

const CONCURRENCY = 32;

export async function run(o: BenchOptions): Promise<BenchResult> {
  const redis = await startRedis();
  const gw = await spawnGatewayProc({ env: gatewayEnv(redis.url), cpus: o.plan.server, name: "b1-gateway", nodeArgs: gatewayNodeArgs(o, "b1-gateway") });
  const bare = await spawnHelperServer("test/bench/servers/bare.ts", { args: ["fastify"], cpus: o.plan.server, name: "b1-bare" });
  const lg = await spawnLoadGen("b1-load", o.plan.load);
  try {
    await lg.call("mintTokens", { key: TEST_JWT_KEY, users: users("b1", 1000) });
    const redisProcess = await redisPid(redis.url);
    const targets = {
      bare: { port: bare.port, pid: bare.pid, path: "/bench/ticket" },
      gateway: { port: gw.port, pid: gw.pid, path: "/api/v1/auth/websocket_ticket" },
    } as const;
    // Warm both (JIT, connection pools), unmeasured.
    for (const t of Object.values(targets)) {
      await lg.call("httpLoad", { port: t.port, path: t.path, concurrency: CONCURRENCY, durationMs: 1500, warmupMs: 0, origin: ORIGIN });
    }
    const results = await alternate(o.rounds, ["bare", "gateway"] as const, async (name, round) => {
      const t = targets[name];
      const server = cpuMeter(t.pid);
      const store = cpuMeter(redisProcess);
      const r = await lg.call<HttpLoadResult>("httpLoad", {
        port: t.port,
        path: t.path,
        concurrency: CONCURRENCY,
        durationMs: o.seconds * 1000,
        warmupMs: 500,
        origin: ORIGIN,
      });
      const cpu = server();
      const redisCpu = store();
      o.log(`  b1 round ${round + 1} ${name}: ${fmt(r.rps)} req/s p50 ${fmt(r.latency.p50)} ms p99 ${fmt(r.latency.p99)} ms statuses ${JSON.stringify(r.statuses)} server CPU ${fmt(cpu.percent, 0)}%`);
      const good = name === "gateway" ? (r.statuses["201"] ?? 0) : (r.statuses["201"] ?? 0);
      if (good !== r.count || r.errors > 0) throw new Error(`b1 ${name}: not every request succeeded: ${JSON.stringify(r.statuses)} errors ${r.errors}`);
      // redis-server's CPU per ticket (the capacity model sizes Redis from it); the bare route uses no Redis.
      return { ...r, serverCpuPercent: cpu.percent, serverCpuUsPerReq: (cpu.cpuMs * 1000) / r.total, redisCpuUsPerReq: (redisCpu.cpuMs * 1000) / r.total };
    });
    const row = (name: "bare" | "gateway") => {
      const rs = results[name];
      return [
        name === "bare" ? "bare Fastify JSON POST" : "gateway POST /api/v1/auth/websocket_ticket",
        spread(rs.map((r) => r.rps), 0),
        spread(rs.map((r) => r.latency.p50)),
        spread(rs.map((r) => r.latency.p99)),
        spread(rs.map((r) => r.serverCpuUsPerReq), 0),
        spread(rs.map((r) => r.serverCpuPercent), 0),
        spread(rs.map((r) => r.loadCpuPercent), 0),
      ];
    };
    const throughputRatio = pairedRatio(results.gateway.map((r) => r.rps), results.bare.map((r) => r.rps));
    const p99Ratio = pairedRatio(results.gateway.map((r) => r.latency.p99), results.bare.map((r) => r.latency.p99));
    const cpuRatio = pairedRatio(results.gateway.map((r) => r.serverCpuUsPerReq), results.bare.map((r) => r.serverCpuUsPerReq));
    const sections = [
      table(["server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "server CPU %", "load-gen CPU %", "redis CPU µs/req"], [
        [...row("bare"), ""],
        [...row("gateway"), spread(results.gateway.map((r) => r.redisCpuUsPerReq), 0)],
        ["gateway ÷ bare (median of paired rounds)", `${throughputRatio.toFixed(2)}×`, "", `${p99Ratio.toFixed(2)}×`, `${cpuRatio.toFixed(2)}×`, "", "", ""],
      ]),
      `Closed loop, ${CONCURRENCY} keep-alive connections, ${o.seconds} s per round after 0.5 s warm-up, ${o.rounds} rounds; 1,000 users' JWTs in rotation; every gateway answer was 201. "Per CPU" is the capacity ratio, bare µs/req ÷ gateway µs/req: on two cores the bare server is not always saturated (its load generator shares the other core with redis-server), so the measured req/s ratio flatters the gateway; a target counts as met only when both ratios meet it.`,
    ];
    return {
      id: "1",
      title: "Ticket issuance vs a bare Fastify JSON POST route",
      sections,
      targets: [
        {
          bench: "1",
          target: "throughput ≥ 0.5× bare (as measured, and per server CPU)",
          measured: `${throughputRatio.toFixed(2)}× as measured; ${(1 / cpuRatio).toFixed(2)}× per CPU`,
          met: throughputRatio >= 0.5 && 1 / cpuRatio >= 0.5,
        },
      ],
      raw: results,
    };
  } finally {
    await lg.close();
    await Promise.all([gw.stop(), bare.stop()]);
    await held(redis.stop());
  }
}
