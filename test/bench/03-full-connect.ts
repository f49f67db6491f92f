/**
 * Bench 3: full connect, as a browser does it: POST a ticket (on a keep-alive
 * connection) → upgrade → connection_established; against the same bare
 * upgrade. Three patterns, each side by side with the bare server:
 *
 *   closed   a fixed number of connects in flight (capacity)
 *   open     a steady 200 connects/s (latency under a realistic load)
 *   serial   1,000 sequential connects (latency with no queueing at all)
 */
import { startRedis } from "../support/redis-server.js";
import { gatewayEnv, gatewayNodeArgs, ORIGIN, TEST_JWT_KEY, users, type BenchOptions, type BenchResult } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { cpuMeter, held, spawnGatewayProc, spawnHelperServer } from "./lib/procs.js";
import { alternate, pairedRatio, spread } from "./lib/rounds.js";
import { fmt, median, table } from "./lib/stats.js";
import type { ConnectResult } from "./load/connect.js";

const CONCURRENCY = 16;
const OPEN_RATE = 200;
const OPEN_SECONDS = 4;
const SERIAL_COUNT = 1000;

type Measured = ConnectResult & { serverCpuPercent: number; serverCpuUsPerConnect: number };

export async function run(o: BenchOptions): Promise<BenchResult> {
  const redis = await startRedis();
  const gw = await spawnGatewayProc({ env: gatewayEnv(redis.url), cpus: o.plan.server, name: "b3-gateway", nodeArgs: gatewayNodeArgs(o, "b3-gateway") });
  const bare = await spawnHelperServer("test/bench/servers/bare.ts", { args: ["fastify"], cpus: o.plan.server, name: "b3-bare" });
  const lg = await spawnLoadGen("b3-load", o.plan.load);
  try {
    await lg.call("mintTokens", { key: TEST_JWT_KEY, users: users("b3", 1000) });
    const target = (name: "bare" | "gateway") => (name === "gateway" ? { port: gw.port, pid: gw.pid, mode: "full" } : { port: bare.port, pid: bare.pid, mode: "bare" });
    const measure = async (name: "bare" | "gateway", pattern: unknown): Promise<Measured> => {
      const t = target(name);
      const server = cpuMeter(t.pid);
      const r = await lg.call<ConnectResult>("connectLoad", { port: t.port, mode: t.mode, origin: ORIGIN, pattern });
      const cpu = server();
      if (r.ok === 0 || Object.keys(r.failures).length > 0) throw new Error(`b3 ${name}: failed connects ${JSON.stringify(r.failures)}`);
      return { ...r, serverCpuPercent: cpu.percent, serverCpuUsPerConnect: (cpu.cpuMs * 1000) / Math.max(1, r.total) };
    };
    for (const name of ["bare", "gateway"] as const) await measure(name, { kind: "closed", concurrency: CONCURRENCY, durationMs: 1500, warmupMs: 0 });

    const closed = await alternate(o.rounds, ["bare", "gateway"] as const, async (name, round) => {
      const r = await measure(name, { kind: "closed", concurrency: CONCURRENCY, durationMs: o.seconds * 1000, warmupMs: 500 });
      o.log(`  b3 closed round ${round + 1} ${name}: ${fmt(r.rate)} connects/s p50 ${fmt(r.latency.p50)} p99 ${fmt(r.latency.p99)} ms server CPU ${fmt(r.serverCpuPercent, 0)}%`);
      return r;
    });
    const open = await alternate(o.rounds, ["bare", "gateway"] as const, async (name, round) => {
      const r = await measure(name, { kind: "open", rate: OPEN_RATE, count: OPEN_RATE * OPEN_SECONDS, warmupCount: 50 });
      o.log(`  b3 open ${OPEN_RATE}/s round ${round + 1} ${name}: p50 ${fmt(r.latency.p50)} p99 ${fmt(r.latency.p99)} max ${fmt(r.latency.max)} ms (schedule lag ≤ ${fmt(r.maxScheduleLagMs ?? NaN)} ms) server CPU ${fmt(r.serverCpuPercent, 0)}%`);
      return r;
    });
    const serial = await alternate(o.rounds, ["bare", "gateway"] as const, async (name, round) => {
      const r = await measure(name, { kind: "sequential", count: SERIAL_COUNT, warmupCount: 50 });
      o.log(`  b3 sequential round ${round + 1} ${name}: p50 ${fmt(r.latency.p50)} p99 ${fmt(r.latency.p99)} ms`);
      return r;
    });

    const rows = (label: string, rs: Measured[], rate: boolean) => [
      label,
      rate ? spread(rs.map((r) => r.rate), 0) : "",
      spread(rs.map((r) => r.latency.p50)),
      spread(rs.map((r) => r.latency.p99)),
      spread(rs.map((r) => r.serverCpuUsPerConnect), 0),
    ];
    const ratios = (rs: Record<"bare" | "gateway", Measured[]>, rate: boolean) => [
      "gateway ÷ bare",
      rate ? `${pairedRatio(rs.gateway.map((r) => r.rate), rs.bare.map((r) => r.rate)).toFixed(2)}×` : "",
      `${pairedRatio(rs.gateway.map((r) => r.latency.p50), rs.bare.map((r) => r.latency.p50)).toFixed(2)}×`,
      `${pairedRatio(rs.gateway.map((r) => r.latency.p99), rs.bare.map((r) => r.latency.p99)).toFixed(2)}×`,
      `${pairedRatio(rs.gateway.map((r) => r.serverCpuUsPerConnect), rs.bare.map((r) => r.serverCpuUsPerConnect)).toFixed(2)}×`,
    ];
    const header = ["pattern / server", "connects/s", "p50 ms", "p99 ms", "server CPU µs/connect"];
    const ticketShare = median(serial.gateway.map((r) => r.ticketLatency?.p50 ?? NaN));
    const openP99 = median(open.gateway.map((r) => r.latency.p99));
    const closedRatio = pairedRatio(closed.gateway.map((r) => r.rate), closed.bare.map((r) => r.rate));
    const serialP50 = pairedRatio(serial.gateway.map((r) => r.latency.p50), serial.bare.map((r) => r.latency.p50));
    const serialP99 = pairedRatio(serial.gateway.map((r) => r.latency.p99), serial.bare.map((r) => r.latency.p99));
    return {
      id: "3",
      title: "Full connect (ticket request + upgrade + connection_established) vs a bare upgrade",
      sections: [
        table(header, [
          rows(`closed loop, ${CONCURRENCY} in flight: bare upgrade`, closed.bare, true),
          rows(`closed loop, ${CONCURRENCY} in flight: gateway full connect`, closed.gateway, true),
          ratios(closed, true),
          rows(`open loop ${OPEN_RATE}/s: bare upgrade`, open.bare, false),
          rows(`open loop ${OPEN_RATE}/s: gateway full connect`, open.gateway, false),
          ratios(open, false),
          rows(`${SERIAL_COUNT} sequential: bare upgrade`, serial.bare, false),
          rows(`${SERIAL_COUNT} sequential: gateway full connect`, serial.gateway, false),
          ratios(serial, false),
        ]),
        `Closed loop: ${o.seconds} s per round after 0.5 s warm-up. Open loop: ${OPEN_RATE * OPEN_SECONDS} connects started on a fixed schedule (${OPEN_RATE}/s, after 50 unmeasured), whatever the server does. Sequential: ${SERIAL_COUNT} connects one after another after 50 unmeasured. ${o.rounds} rounds each, alternating which server goes first. In the sequential gateway connects the ticket request took p50 ${fmt(ticketShare)} ms of the total.`,
      ],
      targets: [
        { bench: "3", target: "full connect rate vs bare upgrade (report)", measured: `${closedRatio.toFixed(2)}×`, met: undefined },
        { bench: "3", target: `p99 < 10 ms at ${OPEN_RATE} connects/s`, measured: `${fmt(openP99)} ms`, met: openP99 < 10 },
        { bench: "3", target: `${SERIAL_COUNT} sequential connects: p50 / p99 vs bare (report)`, measured: `${serialP50.toFixed(2)}× / ${serialP99.toFixed(2)}×`, met: undefined },
      ],
      raw: { closed, open, serial },
    };
  } finally {
    await lg.close();
    await Promise.all([gw.stop(), bare.stop()]);
    await held(redis.stop());
  }
}
