/**
 * Bench 2: redeem-only connect. A pre-issued ticket → upgrade → the gateway
 * redeems it, registers the connection and sends connection_established;
 * against a bare @fastify/websocket upgrade that sends one frame. Closed loop
 * at a fixed concurrency; each connect is closed with 1000 once its first
 * frame arrived (the server's close work is part of the rate).
 */
import { startRedis } from "../support/redis-server.js";
import { gatewayEnv, gatewayNodeArgs, ORIGIN, TEST_JWT_KEY, users, type BenchOptions, type BenchResult } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { cpuMeter, held, redisPid, spawnGatewayProc, spawnHelperServer } from "./lib/procs.js";
import { alternate, pairedRatio, spread } from "./lib/rounds.js";
import { fmt, table } from "./lib/stats.js";
import type { ConnectResult } from "./load/connect.js";

const CONCURRENCY = 16;

export async function run(o: BenchOptions): Promise<BenchResult> {
  const redis = await startRedis();
  const gw = await spawnGatewayProc({ env: gatewayEnv(redis.url), cpus: o.plan.server, name: "b2-gateway", nodeArgs: gatewayNodeArgs(o, "b2-gateway") });
  const bare = await spawnHelperServer("test/bench/servers/bare.ts", { args: ["fastify"], cpus: o.plan.server, name: "b2-bare" });
  const lg = await spawnLoadGen("b2-load", o.plan.load);
  try {
    await lg.call("mintTokens", { key: TEST_JWT_KEY, users: users("b2", 1000) });
    const redisProcess = await redisPid(redis.url);
    // Warm up both servers, and learn roughly how many tickets a round needs.
    await lg.call("issueTickets", { port: gw.port, count: 3000, concurrency: 32, origin: ORIGIN });
    const warm = await lg.call<ConnectResult>("connectLoad", {
      port: gw.port,
      mode: "redeem",
      origin: ORIGIN,
      pattern: { kind: "closed", concurrency: CONCURRENCY, durationMs: 1500, warmupMs: 0 },
    });
    await lg.call("connectLoad", { port: bare.port, mode: "bare", origin: ORIGIN, pattern: { kind: "closed", concurrency: CONCURRENCY, durationMs: 1500, warmupMs: 0 } });
    await lg.call("dropTickets");
    const perRound = Math.ceil(Math.max(2000, warm.rate * (o.seconds + 0.5) * 2));

    const results = await alternate(o.rounds, ["bare", "gateway"] as const, async (name, round) => {
      if (name === "gateway") {
        await lg.call("dropTickets");
        const issued = await lg.call<{ issued: number }>("issueTickets", { port: gw.port, count: perRound, concurrency: 32, origin: ORIGIN });
        if (issued.issued < perRound) throw new Error(`b2: only ${issued.issued} of ${perRound} tickets were issued`);
      }
      const pid = name === "gateway" ? gw.pid : bare.pid;
      const server = cpuMeter(pid);
      const store = cpuMeter(redisProcess);
      const r = await lg.call<ConnectResult>("connectLoad", {
        port: name === "gateway" ? gw.port : bare.port,
        mode: name === "gateway" ? "redeem" : "bare",
        origin: ORIGIN,
        pattern: { kind: "closed", concurrency: CONCURRENCY, durationMs: o.seconds * 1000, warmupMs: 500 },
      });
      const cpu = server();
      const redisCpu = store();
      o.log(`  b2 round ${round + 1} ${name}: ${fmt(r.rate)} connects/s p50 ${fmt(r.latency.p50)} p99 ${fmt(r.latency.p99)} ms failures ${JSON.stringify(r.failures)}${r.exhausted ? " (ran out of tickets)" : ""} server CPU ${fmt(cpu.percent, 0)}%`);
      if (r.ok === 0 || Object.keys(r.failures).length > 0) throw new Error(`b2 ${name}: failed connects ${JSON.stringify(r.failures)}`);
      // redis-server's CPU per connect, redeem and close (the capacity model sizes Redis from it).
      return { ...r, serverCpuPercent: cpu.percent, serverCpuUsPerConnect: (cpu.cpuMs * 1000) / Math.max(1, r.total), redisCpuUsPerConnect: (redisCpu.cpuMs * 1000) / Math.max(1, r.total) };
    });
    const row = (label: string, rs: Array<ConnectResult & { serverCpuPercent: number; serverCpuUsPerConnect: number; redisCpuUsPerConnect: number }>, store = true) => [
      label,
      spread(rs.map((r) => r.rate), 0),
      spread(rs.map((r) => r.latency.p50)),
      spread(rs.map((r) => r.latency.p99)),
      spread(rs.map((r) => r.serverCpuUsPerConnect), 0),
      spread(rs.map((r) => r.serverCpuPercent), 0),
      spread(rs.map((r) => r.loadCpuPercent), 0),
      store ? spread(rs.map((r) => r.redisCpuUsPerConnect), 0) : "",
    ];
    const rateRatio = pairedRatio(results.gateway.map((r) => r.rate), results.bare.map((r) => r.rate));
    const p99Ratio = pairedRatio(results.gateway.map((r) => r.latency.p99), results.bare.map((r) => r.latency.p99));
    const p50Ratio = pairedRatio(results.gateway.map((r) => r.latency.p50), results.bare.map((r) => r.latency.p50));
    const cpuRatio = pairedRatio(results.gateway.map((r) => r.serverCpuUsPerConnect), results.bare.map((r) => r.serverCpuUsPerConnect));
    return {
      id: "2",
      title: "Redeem-only connect vs a bare @fastify/websocket upgrade",
      sections: [
        table(["server", "connects/s", "p50 ms", "p99 ms", "server CPU µs/connect", "server CPU %", "load-gen CPU %", "redis CPU µs/connect"], [
          row("bare upgrade + one frame", results.bare, false),
          row("gateway: ticket redeem → connection_established", results.gateway),
          ["gateway ÷ bare (median of paired rounds)", `${rateRatio.toFixed(2)}×`, `${p50Ratio.toFixed(2)}×`, `${p99Ratio.toFixed(2)}×`, `${cpuRatio.toFixed(2)}×`, "", "", ""],
        ]),
        `Closed loop, ${CONCURRENCY} connects in flight, ${o.seconds} s per round after 0.5 s warm-up, ${o.rounds} rounds. Tickets (${perRound} per round, 1,000 users) were issued before each gateway round, outside the measured window. A connect is timed from its first byte to the first frame, then closed with 1000. The client side of a connect (TCP handshake, upgrade, close) costs about as much CPU as a bare server's side, so the bare server's rate is partly bound by the load generator's core: "per CPU" (bare µs/connect ÷ gateway µs/connect) is the capacity ratio, and a target counts as met only when both ratios meet it.`,
      ],
      targets: [
        {
          bench: "2",
          target: "connect rate ≥ 0.8× bare (as measured, and per server CPU)",
          measured: `${rateRatio.toFixed(2)}× as measured; ${(1 / cpuRatio).toFixed(2)}× per CPU`,
          met: rateRatio >= 0.8 && 1 / cpuRatio >= 0.8,
        },
        { bench: "2", target: "p99 ≤ 1.5× bare", measured: `${p99Ratio.toFixed(2)}×`, met: p99Ratio <= 1.5 },
      ],
      raw: results,
    };
  } finally {
    await lg.close();
    await Promise.all([gw.stop(), bare.stop()]);
    await held(redis.stop());
  }
}
