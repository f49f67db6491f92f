/**
 * Bench 4: N concurrent authenticated idle connections on one gateway
 * instance, heartbeats on, against N bare `ws` connections to a plain ws
 * server that pings on the same interval. Memory per connection (RSS growth
 * over the idle process, ÷ N) and CPU while idle.
 */
import { startRedis } from "../support/redis-server.js";
import { gatewayEnv, gatewayNodeArgs, ORIGIN, TEST_JWT_KEY, users, type BenchOptions, type BenchResult } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { cpuMeter, gcAndMemory, held, rssBytes, spawnGatewayProc, spawnHelperServer, type GatewayProc } from "./lib/procs.js";
import { alternate, pairedRatio, spread } from "./lib/rounds.js";
import { fmt, sleep, table } from "./lib/stats.js";

const HEARTBEAT_MS = 5000;
const IDLE_WINDOW_MS = 2 * HEARTBEAT_MS;
const SETTLE_MS = 1000;

interface IdleRound {
  readonly connectMs: number;
  readonly rssBefore: number;
  readonly rssAfter: number;
  /** RSS at the end of the idle window, before the forced GC. */
  readonly rssAfterNoGc: number;
  readonly bytesPerConnection: number;
  readonly heapPerConnection: number;
  readonly idleCpuPercent: number;
  readonly cpuMsPerHeartbeatRound: number;
  readonly stillOpen: number;
  readonly pingsSeen: number;
}

export async function run(o: BenchOptions): Promise<BenchResult> {
  const n = o.sizes.idleConnections;
  const redis = await startRedis();
  const lg = await spawnLoadGen("b4-load", o.plan.load);
  try {
    await lg.call("mintTokens", { key: TEST_JWT_KEY, users: users("b4", n) }, 120_000);
    const results = await alternate(o.rounds, ["bare", "fastify", "gateway"] as const, async (name, round): Promise<IdleRound> => {
      let server: GatewayProc;
      if (name === "gateway") {
        server = await spawnGatewayProc({
          env: gatewayEnv(redis.url, { HEARTBEAT_INTERVAL_MS: String(HEARTBEAT_MS) }),
          cpus: o.plan.server,
          name: `b4-gateway-${round}`,
          nodeArgs: [...gatewayNodeArgs(o, `b4-gateway-${round}`), "--inspect=127.0.0.1:0"],
        });
      } else {
        server = await spawnHelperServer("test/bench/servers/bare.ts", {
          args: [name === "bare" ? "ws" : "fastify"],
          env: { HEARTBEAT_INTERVAL_MS: String(HEARTBEAT_MS) },
          cpus: o.plan.server,
          name: `b4-${name}-${round}`,
          nodeArgs: ["--inspect=127.0.0.1:0"],
        });
      }
      try {
        await sleep(SETTLE_MS);
        const before = await gcAndMemory(server);
        const rssBefore = rssBytes(server.pid);
        const opened = await lg.call<{ open: number; failures: Record<string, number>; ms: number }>(
          "idleOpen",
          { port: server.port, mode: name === "gateway" ? "gateway" : "bare", count: n, concurrency: 64, origin: ORIGIN },
          600_000,
        );
        if (opened.open !== n) throw new Error(`b4 ${name}: only ${opened.open} of ${n} connections opened: ${JSON.stringify(opened.failures)}`);
        await sleep(SETTLE_MS);
        const cpu = cpuMeter(server.pid);
        await sleep(IDLE_WINDOW_MS);
        const used = cpu();
        const rssAfterNoGc = rssBytes(server.pid);
        const after = await gcAndMemory(server);
        const rssAfter = rssBytes(server.pid);
        const status = await lg.call<{ open: number; pings: number; closed: Record<string, number> }>("idleStatus");
        await lg.call("idleClose", {}, 120_000);
        const r: IdleRound = {
          connectMs: opened.ms,
          rssBefore,
          rssAfter,
          rssAfterNoGc,
          bytesPerConnection: (rssAfter - rssBefore) / n,
          heapPerConnection: (after.heapUsed + after.external - before.heapUsed - before.external) / n,
          idleCpuPercent: used.percent,
          cpuMsPerHeartbeatRound: used.cpuMs / (used.wallMs / HEARTBEAT_MS),
          stillOpen: status.open,
          pingsSeen: status.pings,
        };
        o.log(
          `  b4 round ${round + 1} ${name}: ${n} open in ${fmt(opened.ms / 1000)} s, RSS ${fmt(rssBefore / 2 ** 20)} → ${fmt(rssAfter / 2 ** 20)} MiB = ${fmt(r.bytesPerConnection / 1024)} KiB/conn (heap ${fmt(r.heapPerConnection / 1024)} KiB/conn; RSS before GC ${fmt(rssAfterNoGc / 2 ** 20)} MiB), idle CPU ${fmt(used.percent)}%, ${status.open} still open, pings ${status.pings}`,
        );
        if (status.open !== n) throw new Error(`b4 ${name}: ${n - status.open} connections closed while idle: ${JSON.stringify(status.closed)}`);
        return r;
      } finally {
        await server.stop(15_000);
      }
    });
    const row = (label: string, rs: IdleRound[]) => [
      label,
      spread(rs.map((r) => r.rssBefore / 2 ** 20), 1),
      spread(rs.map((r) => r.rssAfter / 2 ** 20), 1),
      spread(rs.map((r) => r.bytesPerConnection / 1024), 2),
      spread(rs.map((r) => r.heapPerConnection / 1024), 2),
      spread(rs.map((r) => r.idleCpuPercent), 2),
      spread(rs.map((r) => r.cpuMsPerHeartbeatRound), 1),
      spread(rs.map((r) => n / (r.connectMs / 1000)), 0),
    ];
    const memRatio = pairedRatio(results.gateway.map((r) => r.bytesPerConnection), results.bare.map((r) => r.bytesPerConnection));
    const heapRatio = pairedRatio(results.gateway.map((r) => r.heapPerConnection), results.bare.map((r) => r.heapPerConnection));
    const fastifyShare = pairedRatio(results.fastify.map((r) => r.bytesPerConnection), results.bare.map((r) => r.bytesPerConnection));
    // Issue 16's baseline: a bare Fastify + @fastify/websocket server with the same heartbeat.
    const memRatioFastify = pairedRatio(results.gateway.map((r) => r.bytesPerConnection), results.fastify.map((r) => r.bytesPerConnection));
    const cpuRatio = pairedRatio(results.gateway.map((r) => r.cpuMsPerHeartbeatRound), results.bare.map((r) => r.cpuMsPerHeartbeatRound));
    const gwCpuPerRound = spread(results.gateway.map((r) => r.cpuMsPerHeartbeatRound), 1);
    return {
      id: "4",
      title: `${n.toLocaleString("en-US")} idle authenticated connections vs bare Fastify + @fastify/websocket and bare ws`,
      sections: [
        table(["server", "RSS before MiB", `RSS with ${n} MiB`, "RSS KiB / connection", "JS heap KiB / connection", "idle CPU %", "CPU ms per heartbeat round", "connects/s while opening"], [
          row(`bare ws server, ping every ${HEARTBEAT_MS / 1000} s`, results.bare),
          row(`bare Fastify + @fastify/websocket, same pings`, results.fastify),
          row(`gateway, HEARTBEAT_INTERVAL_MS=${HEARTBEAT_MS}`, results.gateway),
          ["gateway ÷ bare Fastify + @fastify/websocket", "", "", `${memRatioFastify.toFixed(2)}×`, "", "", "", ""],
          ["gateway ÷ bare ws", "", "", `${memRatio.toFixed(2)}×`, `${heapRatio.toFixed(2)}×`, "", `${cpuRatio.toFixed(2)}×`, ""],
        ]),
        `The target's baseline is the bare Fastify + @fastify/websocket server (which keeps each upgrade's request, reply, IncomingMessage and ServerResponse for the socket's lifetime; the gateway upgrades /ws with ws directly and keeps none of them); the bare ws ratio is reported beside it. Each round starts a fresh server (with --inspect on loopback, so that the bench can force a full GC through the inspector protocol), forces a GC after ${SETTLE_MS / 1000} s idle and reads RSS and the JS heap (heapUsed + external), opens ${n} connections from one load-generator process (64 at a time; gateway: a ticket per connection, ${n} distinct users), waits ${SETTLE_MS / 1000} s, measures CPU over ${IDLE_WINDOW_MS / 1000} s (two heartbeat rounds), then forces a GC again and reads RSS and the heap: per connection = the difference ÷ ${n}. Every connection must still be open at the end. The heartbeat is 5 s here (default 25 s) so that the window holds two rounds; at the default interval the idle CPU is about a fifth: the gateway spends ${gwCpuPerRound} ms of CPU per round over ${n} connections.`,
      ],
      targets: [
        {
          bench: "4",
          target: "RSS per connection ≤ 1.5× bare Fastify + @fastify/websocket",
          measured: `${memRatioFastify.toFixed(2)}× (vs bare ws ${memRatio.toFixed(2)}×; bare @fastify/websocket vs bare ws ${fastifyShare.toFixed(2)}×)`,
          met: memRatioFastify <= 1.5,
        },
        { bench: "4", target: "CPU at idle (report)", measured: `${spread(results.gateway.map((r) => r.idleCpuPercent), 2)} % (bare ${spread(results.bare.map((r) => r.idleCpuPercent), 2)} %)`, met: undefined },
      ],
      raw: results,
    };
  } finally {
    await lg.close();
    await held(redis.stop());
  }
}
