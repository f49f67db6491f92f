/**
 * Bench 5: cross-instance event delivery. Two instances, 1,000 users with one
 * socket each (half on each instance); every event is published through the
 * instance that does NOT hold the user's socket, so each delivery crosses
 * Redis. Against Socket.IO 4 with a JWT auth middleware and
 * @socket.io/redis-adapter, with the same clients, users and publisher.
 *
 *   latency     open loop at 1,000 and 2,000 events/s: publish → receipt p50/p99
 *   throughput  closed loop, 64 publishes in flight: delivered events/s
 *   batched     the gateway only: closed loop, 16 batches of 50 in flight
 *               through POST /internal/v1/events (10 users × 5 events each,
 *               like an agent's bursts of tokens), beside single publishing
 */
import { startRedis } from "../support/redis-server.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { gatewayEnv, gatewayNodeArgs, ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET, users, type BenchOptions, type BenchResult } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { cpuMeter, held, redisPid, spawnGatewayProc, spawnHelperServer, type GatewayProc } from "./lib/procs.js";
import { alternate, pairedRatio, spread } from "./lib/rounds.js";
import { fmt, median, table } from "./lib/stats.js";

const RATES = [1000, 2000] as const;
const IN_FLIGHT = 64;
const BATCH = { size: 50, perUser: 5 } as const;
const BATCHES_IN_FLIGHT = 16;

interface RunResult {
  accepted: number;
  received: number;
  missing: number;
  gaps: number;
  dups: number;
  statuses: Record<string, number>;
  latency: { p50: number; p99: number; max: number; count: number };
  throughput: number;
  acceptedPerSecond: number;
  loadCpuPercent: number;
  loadLagMs: number;
}
type Round = {
  byRate: Record<number, RunResult & { serverCpuPercent: number }>;
  max: RunResult & { serverCpuPercent: number; serverCpuUsPerEvent: number; redisCpuPercent: number; redisCpuUsPerEvent: number };
  /** The gateway on one Redis only: the same closed loop through the batch endpoint. */
  batched?: RunResult & { serverCpuUsPerEvent: number };
};

type System = "socketio" | "gateway" | "cluster";
const SYSTEMS = ["socketio", "gateway", "cluster"] as const satisfies readonly System[];
const LABELS: Record<System, string> = { socketio: "Socket.IO + redis-adapter", gateway: "gateway, one Redis", cluster: "gateway, Redis Cluster (3 primaries)" };

export async function run(o: BenchOptions): Promise<BenchResult> {
  const nUsers = o.sizes.deliveryUsers;
  const redis = await startRedis();
  // The same gateway on a 3-primary Redis Cluster (REDIS_CLUSTER_NODES, sharded pub/sub), beside the single instance.
  const cluster = await startRedisCluster({ masters: 3 });
  const servers: Record<System, GatewayProc[]> = { gateway: [], cluster: [], socketio: [] };
  const lg = await spawnLoadGen("b5-load", o.plan.load);
  try {
    for (let i = 0; i < 2; i++) {
      servers.gateway.push(await spawnGatewayProc({ env: gatewayEnv(redis.url), cpus: o.plan.server, name: `b5-gateway-${i}`, nodeArgs: gatewayNodeArgs(o, `b5-gateway-${i}`) }));
      const clusterEnv = gatewayEnv(redis.url, { REDIS_CLUSTER_NODES: cluster.startupNodes });
      delete clusterEnv.REDIS_URL; // the two are exclusive
      servers.cluster.push(await spawnGatewayProc({ env: clusterEnv, cpus: o.plan.server, name: `b5-cluster-${i}`, nodeArgs: gatewayNodeArgs(o, `b5-cluster-${i}`) }));
      servers.socketio.push(
        await spawnHelperServer("test/bench/servers/socketio.ts", {
          env: { REDIS_URL: redis.url, JWT_SECRET_KEY: TEST_JWT_KEY, SERVICE_SECRET: TEST_SERVICE_SECRET },
          cpus: o.plan.server,
          name: `b5-socketio-${i}`,
        }),
      );
    }
    const redisProcess = await redisPid(redis.url);
    const clusterProcesses = await Promise.all(cluster.nodes.map((n) => redisPid(`redis://${n.address}`)));

    const results = await alternate(o.rounds, SYSTEMS, async (system, round): Promise<Round> => {
      const procs = servers[system];
      // Fresh users every round: Socket.IO numbers events in memory, per user, from 1.
      const userList = users(`b5-${system}-r${round}`, nUsers);
      await lg.call("mintTokens", { key: TEST_JWT_KEY, users: userList });
      const setup = await lg.call<{ connected: number; failures: Record<string, number> }>("deliverySetup", {
        system: system === "cluster" ? "gateway" : system,
        ports: procs.map((p) => p.port),
        users: userList,
        serviceSecret: TEST_SERVICE_SECRET,
        origin: ORIGIN,
        concurrency: 32,
      });
      if (setup.connected !== nUsers) throw new Error(`b5 ${system}: ${setup.connected} of ${nUsers} connected: ${JSON.stringify(setup.failures)}`);
      try {
        // Warm-up, unmeasured.
        await lg.call("deliveryRun", { rate: 1000, durationMs: 1000, warmupMs: 0 });
        const meterAll = () => {
          const meters = procs.map((p) => cpuMeter(p.pid));
          return () => meters.map((m) => m()).reduce((a, m) => ({ cpuMs: a.cpuMs + m.cpuMs, percent: a.percent + m.percent }), { cpuMs: 0, percent: 0 });
        };
        const check = (r: RunResult, what: string) => {
          if (r.missing !== 0 || r.gaps !== 0 || r.dups !== 0 || r.accepted === 0) {
            throw new Error(`b5 ${system} ${what}: accepted ${r.accepted}, missing ${r.missing}, gaps ${r.gaps}, dups ${r.dups}, statuses ${JSON.stringify(r.statuses)}`);
          }
        };
        const byRate: Round["byRate"] = {};
        for (const rate of RATES) {
          const m = meterAll();
          const r = await lg.call<RunResult>("deliveryRun", { rate, durationMs: o.seconds * 1000, warmupMs: 500 });
          check(r, `${rate}/s`);
          byRate[rate] = { ...r, serverCpuPercent: m().percent };
          o.log(`  b5 round ${round + 1} ${system} ${rate}/s: p50 ${fmt(r.latency.p50)} p99 ${fmt(r.latency.p99)} max ${fmt(r.latency.max)} ms, ${fmt(r.acceptedPerSecond)} accepted/s, servers CPU ${fmt(byRate[rate]!.serverCpuPercent, 0)}%, load-gen CPU ${fmt(r.loadCpuPercent, 0)}% lag ${fmt(r.loadLagMs)} ms`);
        }
        const m = meterAll();
        const redisMeters = (system === "cluster" ? clusterProcesses : [redisProcess]).map((pid) => cpuMeter(pid));
        const r = await lg.call<RunResult>("deliveryRun", { concurrency: IN_FLIGHT, durationMs: o.seconds * 1000, warmupMs: 500 });
        check(r, "max");
        const cpu = m();
        const redisCpu = redisMeters.map((rm) => rm()).reduce((a, x) => ({ cpuMs: a.cpuMs + x.cpuMs, percent: a.percent + x.percent }), { cpuMs: 0, percent: 0 });
        const max = { ...r, serverCpuPercent: cpu.percent, serverCpuUsPerEvent: (cpu.cpuMs * 1000) / r.accepted, redisCpuPercent: redisCpu.percent, redisCpuUsPerEvent: (redisCpu.cpuMs * 1000) / r.accepted };
        o.log(`  b5 round ${round + 1} ${system} max: ${fmt(r.throughput)} delivered/s p50 ${fmt(r.latency.p50)} p99 ${fmt(r.latency.p99)} ms, servers CPU ${fmt(cpu.percent, 0)}% (${fmt(max.serverCpuUsPerEvent, 0)} µs/event), redis CPU ${fmt(redisCpu.percent, 0)}% (${fmt(max.redisCpuUsPerEvent, 0)} µs/event), load-gen CPU ${fmt(r.loadCpuPercent, 0)}%`);
        if (system !== "gateway") return { byRate, max };
        const mb = meterAll();
        const b = await lg.call<RunResult>("deliveryRun", { concurrency: BATCHES_IN_FLIGHT, batch: BATCH, durationMs: o.seconds * 1000, warmupMs: 500 });
        check(b, "batched");
        const batched = { ...b, serverCpuUsPerEvent: (mb().cpuMs * 1000) / b.accepted };
        o.log(`  b5 round ${round + 1} ${system} batched: ${fmt(b.throughput)} delivered/s p50 ${fmt(b.latency.p50)} p99 ${fmt(b.latency.p99)} ms, servers ${fmt(batched.serverCpuUsPerEvent, 0)} µs/event, load-gen CPU ${fmt(b.loadCpuPercent, 0)}%`);
        return { byRate, max, batched };
      } finally {
        await lg.call("deliveryClose");
      }
    });

    const rows: string[][] = [];
    for (const rate of RATES) {
      for (const system of SYSTEMS) {
        const rs = results[system].map((r) => r.byRate[rate]!);
        rows.push([
          `${rate.toLocaleString("en-US")} events/s: ${LABELS[system]}`,
          spread(rs.map((r) => r.latency.p50)),
          spread(rs.map((r) => r.latency.p99)),
          spread(rs.map((r) => r.latency.max)),
          spread(rs.map((r) => r.serverCpuPercent), 0),
          spread(rs.map((r) => r.loadCpuPercent), 0),
        ]);
      }
    }
    const maxRows = SYSTEMS.map((system) => {
      const rs = results[system].map((r) => r.max);
      return [
        LABELS[system],
        spread(rs.map((r) => r.throughput), 0),
        spread(rs.map((r) => r.latency.p50)),
        spread(rs.map((r) => r.latency.p99)),
        spread(rs.map((r) => r.serverCpuUsPerEvent), 0),
        spread(rs.map((r) => r.redisCpuUsPerEvent), 0),
        spread(rs.map((r) => r.loadCpuPercent), 0),
      ];
    });
    const thrRatio = pairedRatio(results.gateway.map((r) => r.max.throughput), results.socketio.map((r) => r.max.throughput));
    const cpuRatio = pairedRatio(results.gateway.map((r) => r.max.serverCpuUsPerEvent), results.socketio.map((r) => r.max.serverCpuUsPerEvent));
    const clusterRatio = pairedRatio(results.cluster.map((r) => r.max.throughput), results.gateway.map((r) => r.max.throughput));
    const clusterCpuRatio = pairedRatio(results.cluster.map((r) => r.max.serverCpuUsPerEvent), results.gateway.map((r) => r.max.serverCpuUsPerEvent));
    const batched = results.gateway.map((r) => r.batched!);
    const batchRatio = pairedRatio(batched.map((r) => r.throughput), results.gateway.map((r) => r.max.throughput));
    maxRows.splice(1, 0, [
      `${LABELS.gateway}, batches of ${BATCH.size} (POST /internal/v1/events, ${BATCHES_IN_FLIGHT} in flight)`,
      spread(batched.map((r) => r.throughput), 0),
      spread(batched.map((r) => r.latency.p50)),
      spread(batched.map((r) => r.latency.p99)),
      spread(batched.map((r) => r.serverCpuUsPerEvent), 0),
      "",
      spread(batched.map((r) => r.loadCpuPercent), 0),
    ]);
    const p99At2000 = median(results.gateway.map((r) => r.byRate[2000]!.latency.p99));
    const at1000 = results.gateway.map((r) => r.byRate[1000]!.latency);
    return {
      id: "5",
      title: `Cross-instance delivery, 2 instances, ${nUsers.toLocaleString("en-US")} users: gateway (one Redis, and a 3-primary Redis Cluster) vs Socket.IO + @socket.io/redis-adapter`,
      sections: [
        table(["steady rate / system", "p50 ms", "p99 ms", "max ms", "servers CPU % (both)", "load-gen CPU %"], rows),
        table(["max throughput, 64 publishes in flight", "delivered events/s", "p50 ms", "p99 ms", "servers CPU µs/event", "redis-server CPU µs/event", "load-gen CPU %"], [
          ...maxRows,
          ["gateway ÷ Socket.IO", `${thrRatio.toFixed(2)}×`, "", "", `${cpuRatio.toFixed(2)}×`, "", ""],
          ["gateway batched ÷ single-event", `${batchRatio.toFixed(2)}×`, "", "", "", "", ""],
          ["gateway on the cluster ÷ on one Redis", `${clusterRatio.toFixed(2)}×`, "", "", `${clusterCpuRatio.toFixed(2)}×`, "", ""],
        ]),
        `Latency is publish → receipt: from the moment the load generator starts the internal-API POST to the moment the client socket has the frame, both in the same process (one clock). The publisher posts to the instance that does not hold the user's socket, round-robin over the users; open loop (a fixed schedule, whatever the servers do), ${o.seconds} s per rate after 0.5 s warm-up. Every accepted event must arrive exactly once and in order (checked: no gaps, no duplicates), else the run fails. Both instances of a system share CPU 0.`,
      ],
      targets: [
        { bench: "5", target: "p99 ≤ 5 ms at 2,000 events/s", measured: `${fmt(p99At2000)} ms`, met: p99At2000 <= 5 },
        { bench: "5", target: "throughput ≥ 1.5× Socket.IO", measured: `${thrRatio.toFixed(2)}×`, met: thrRatio >= 1.5 },
        { bench: "5", target: "batched publishing (batches of 50) ≥ 3× single-event delivered events/s (issue 12)", measured: `${batchRatio.toFixed(2)}×`, met: batchRatio >= 3 },
        { bench: "5", target: "delivery on a 3-primary Redis Cluster beside one Redis (report, issue 8)", measured: `${clusterRatio.toFixed(2)}× the throughput, p99 at 1,000/s ${spread(results.cluster.map((r) => r.byRate[1000]!.latency.p99))} ms`, met: undefined },
        { bench: "5", target: "latency at a steady 1,000 events/s (report, issue 4)", measured: `p50 ${spread(at1000.map((l) => l.p50))} ms, p99 ${spread(at1000.map((l) => l.p99))} ms`, met: undefined },
      ],
      raw: results,
    };
  } finally {
    await lg.close();
    await Promise.all([...servers.gateway, ...servers.cluster, ...servers.socketio].map((s) => s.stop()));
    await held(redis.stop());
    await held(cluster.stop());
  }
}
