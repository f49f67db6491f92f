/**
 * A/B: the same workload against two gateways side by side — this checkout
 * (A) and another one (B, e.g. a copy with a proposed change) — alternating
 * A and B round by round, pinned like the benchmarks. The figure to read is
 * the server's CPU per operation (µs/op): on a shared, noisy machine it
 * moves far less than req/s or latency.
 *
 *   npx tsx test/bench/ab.ts [--a /tmp/base] --b /tmp/patched [--workload ticket|redeem|full] [--rounds 6] [--seconds 3]
 *                            [--env-a K=V,…] [--env-b K=V,…] [--b-log /dev/null]
 *
 * B needs service/, package.json, tsconfig.json and a node_modules (a symlink to this one's will do).
 */
import { startRedis } from "../support/redis-server.js";
import { gatewayEnv, ORIGIN, TEST_JWT_KEY, users } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { cpuMeter, cpuPlan, held, pinSelf, ROOT, spawnGatewayProc } from "./lib/procs.js";
import { alternate, pairedRatio, spread } from "./lib/rounds.js";
import { table } from "./lib/stats.js";
import type { ConnectResult } from "./load/connect.js";
import type { HttpLoadResult } from "./load/http-load.js";

const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const envOf = (v: string | undefined) => Object.fromEntries((v ?? "").split(",").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
const bRoot = arg("--b");
const aRoot = arg("--a") ?? ROOT;
const workload = (arg("--workload") ?? "redeem") as "ticket" | "redeem" | "full";
const rounds = Number(arg("--rounds") ?? 6);
const seconds = Number(arg("--seconds") ?? 3);
const envA = envOf(arg("--env-a"));
const envB = envOf(arg("--env-b"));
const bLog = arg("--b-log");
if (!bRoot && Object.keys(envB).length === 0 && !bLog) {
  process.stderr.write("usage: ab.ts --b DIR | --env-b K=V [--workload ticket|redeem|full] [--rounds N] [--seconds S]\n");
  process.exit(2);
}

const plan = cpuPlan(!process.argv.includes("--no-pin"));
pinSelf(plan.load);
const redis = await startRedis();
const gws = {
  A: await spawnGatewayProc({ env: gatewayEnv(redis.url, envA), cpus: plan.server, name: "ab-A", root: aRoot }),
  B: await spawnGatewayProc({ env: gatewayEnv(redis.url, envB), cpus: plan.server, name: "ab-B", root: bRoot ?? ROOT, ...(bLog ? { logPath: bLog } : {}) }),
};
const lg = await spawnLoadGen("ab-load", plan.load);
try {
  await lg.call("mintTokens", { key: TEST_JWT_KEY, users: users("ab", 1000) });
  type Row = { rate: number; p50: number; p99: number; cpuUs: number };
  const once = async (side: "A" | "B", durationMs: number): Promise<Row> => {
    const gw = gws[side];
    if (workload === "redeem") {
      await lg.call("dropTickets");
      await lg.call("issueTickets", { port: gw.port, count: Math.ceil((durationMs / 1000 + 0.5) * 2500), concurrency: 32, origin: ORIGIN });
    }
    const meter = cpuMeter(gw.pid);
    if (workload === "ticket") {
      const r = await lg.call<HttpLoadResult>("httpLoad", { port: gw.port, path: "/api/v1/auth/websocket_ticket", concurrency: 32, durationMs, warmupMs: 300, origin: ORIGIN });
      const c = meter();
      return { rate: r.rps, p50: r.latency.p50, p99: r.latency.p99, cpuUs: (c.cpuMs * 1000) / r.total };
    }
    const r = await lg.call<ConnectResult>("connectLoad", { port: gw.port, mode: workload, origin: ORIGIN, pattern: { kind: "closed", concurrency: 16, durationMs, warmupMs: 300 } });
    const c = meter();
    if (Object.keys(r.failures).length > 0) throw new Error(`${side}: ${JSON.stringify(r.failures)}`);
    return { rate: r.rate, p50: r.latency.p50, p99: r.latency.p99, cpuUs: (c.cpuMs * 1000) / r.total };
  };
  await once("A", 1000);
  await once("B", 1000);
  const res = await alternate(rounds, ["A", "B"] as const, async (side) => once(side, seconds * 1000));
  const row = (side: "A" | "B") => [
    side === "A" ? `A: ${aRoot}${Object.keys(envA).length ? ` ${JSON.stringify(envA)}` : ""}` : `B: ${bRoot ?? ROOT}${Object.keys(envB).length ? ` ${JSON.stringify(envB)}` : ""}${bLog ? ` (output to ${bLog})` : ""}`,
    spread(res[side].map((r) => r.cpuUs), 0),
    spread(res[side].map((r) => r.rate), 0),
    spread(res[side].map((r) => r.p50)),
    spread(res[side].map((r) => r.p99)),
  ];
  const ratio = (f: (r: Row) => number) => `${pairedRatio(res.B.map(f), res.A.map(f)).toFixed(2)}×`;
  process.stdout.write(
    `workload ${workload}, ${rounds} rounds of ${seconds} s, ${plan.describe()}\n\n${table(["gateway", "server CPU µs/op", "ops/s", "p50 ms", "p99 ms"], [
      row("A"),
      row("B"),
      ["B ÷ A (median of paired rounds)", ratio((r) => r.cpuUs), ratio((r) => r.rate), ratio((r) => r.p50), ratio((r) => r.p99)],
    ])}\n`,
  );
} finally {
  await lg.close();
  await Promise.all([gws.A.stop(), gws.B.stop()]);
  await held(redis.stop());
}
