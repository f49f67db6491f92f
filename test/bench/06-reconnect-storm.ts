/**
 * Bench 6: reconnect storm. N clients on one instance lose their connections
 * at once, miss one event each, then all come back: the gateway's clients
 * with a new ticket each and `resume`; Socket.IO's with connection state
 * recovery (one instance, in-memory adapter: CSR does not work with the
 * pub/sub redis-adapter). See load/storm.ts for the exact sequence.
 */
import { startRedis } from "../support/redis-server.js";
import { gatewayEnv, gatewayNodeArgs, ORIGIN, TEST_JWT_KEY, TEST_SERVICE_SECRET, users, type BenchOptions, type BenchResult } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { cpuMeter, held, redisPid, spawnGatewayProc, spawnHelperServer, type GatewayProc } from "./lib/procs.js";
import { alternate, pairedRatio, spread } from "./lib/rounds.js";
import { fmt, table } from "./lib/stats.js";

const JITTER_MS = 500;
const RATE = 500;
const TIMEOUT_MS = 45_000;

interface StormResult {
  clients: number;
  recovered: number;
  fullRecoveryMs: number;
  recovery: { p50: number; p99: number; max: number };
  contiguous: number;
  incompleteExamples: unknown[];
  dups: number;
  resyncs: number;
  stateLost: number;
  attempts: number;
  errors: Record<string, number>;
  publishStatuses: Record<string, number>;
  burstMs: number;
  loadCpuPercent: number;
  loadLagMs: number;
}
type Measured = StormResult & { serverCpuPercent: number; setupMs: number };

export async function run(o: BenchOptions): Promise<BenchResult> {
  const n = o.sizes.stormClients;
  const redis = await startRedis();
  const redisProcess = await redisPid(redis.url);
  const lg = await spawnLoadGen("b6-load", o.plan.load);
  try {
    const results = await alternate(o.rounds, ["socketio", "gateway"] as const, async (system, round): Promise<Measured> => {
      // A fresh server every round: Socket.IO's recovery keeps every broadcast
      // for 2 minutes and scans them on each restore, so a reused server would
      // carry the previous rounds' packets into this one.
      const server: GatewayProc =
        system === "gateway"
          ? await spawnGatewayProc({ env: gatewayEnv(redis.url), cpus: o.plan.server, name: `b6-gateway-${round}`, nodeArgs: gatewayNodeArgs(o, `b6-gateway-${round}`) })
          : await spawnHelperServer("test/bench/servers/socketio.ts", {
              env: { CSR: "1", JWT_SECRET_KEY: TEST_JWT_KEY, SERVICE_SECRET: TEST_SERVICE_SECRET },
              cpus: o.plan.server,
              name: `b6-socketio-${round}`,
            });
      try {
        const userList = users(`b6-${system}-r${round}`, n);
        await lg.call("mintTokens", { key: TEST_JWT_KEY, users: userList }, 120_000);
        const setup = await lg.call<{ connected: number; ms: number }>(
          "stormSetup",
          { system, port: server.port, users: userList, origin: ORIGIN, concurrency: 64, jitterMs: JITTER_MS, ticketConnections: 128 },
          300_000,
        );
        if (setup.connected !== n) throw new Error(`b6 ${system}: only ${setup.connected} of ${n} connected`);
        try {
          const cpu = cpuMeter(server.pid);
          const redisCpu = cpuMeter(redisProcess);
          const r = await lg.call<StormResult>("stormRun", { serviceSecret: TEST_SERVICE_SECRET, rate: RATE, timeoutMs: TIMEOUT_MS }, TIMEOUT_MS + 60_000);
          const used = cpu();
          const usedRedis = redisCpu();
          o.log(
            `  b6 round ${round + 1} ${system}: ${r.recovered}/${r.clients} recovered, full recovery ${fmt(r.fullRecoveryMs)} ms (p50 ${fmt(r.recovery.p50)} p99 ${fmt(r.recovery.p99)}), contiguous ${r.contiguous}, dups ${r.dups}, resyncs ${r.resyncs}, state lost ${r.stateLost}, attempts ${r.attempts}, errors ${JSON.stringify(r.errors)}, publishes ${JSON.stringify(r.publishStatuses)}, server CPU ${fmt(used.percent, 0)}% redis ${fmt(usedRedis.percent, 0)}% load-gen ${fmt(r.loadCpuPercent, 0)}% lag ${fmt(r.loadLagMs)} ms`,
          );
          return { ...r, serverCpuPercent: used.percent, setupMs: setup.ms };
        } finally {
          await lg.call("stormClose", {}, 60_000);
        }
      } finally {
        await server.stop();
      }
    });
    const row = (label: string, rs: Measured[]) => [
      label,
      spread(rs.map((r) => r.recovered), 0),
      spread(rs.map((r) => r.contiguous), 0),
      spread(rs.map((r) => r.fullRecoveryMs), 0),
      spread(rs.map((r) => r.recovery.p50), 0),
      spread(rs.map((r) => r.recovery.p99), 0),
      spread(rs.map((r) => r.attempts / r.clients), 2),
      spread(rs.map((r) => r.serverCpuPercent), 0),
      spread(rs.map((r) => r.loadCpuPercent), 0),
      spread(rs.map((r) => r.loadLagMs), 0),
    ];
    const ratio = pairedRatio(results.gateway.map((r) => r.fullRecoveryMs), results.socketio.map((r) => r.fullRecoveryMs));
    const allBack = results.gateway.every((r) => r.recovered === n && r.contiguous === n && r.dups === 0 && r.resyncs === 0);
    const sioAllBack = results.socketio.every((r) => r.recovered === n && r.contiguous === n && r.dups === 0 && r.stateLost === 0);
    return {
      id: "6",
      title: `Reconnect storm: ${n.toLocaleString("en-US")} clients dropped at once, gateway (new ticket + resume) vs Socket.IO connection state recovery`,
      sections: [
        table(["system", "recovered", "contiguous seqs", "time to full recovery ms", "per-client p50 ms", "per-client p99 ms", "reconnect attempts / client", "server CPU %", "load-gen CPU %", "load-gen worst lag ms"], [
          row("Socket.IO 4, connection state recovery", results.socketio),
          row("gateway: new ticket + resume", results.gateway),
          ["gateway ÷ Socket.IO", "", "", `${ratio.toFixed(2)}×`, "", "", "", "", "", ""],
        ]),
        `One instance each (CPU 0). ${n} clients (one user each) in one load-generator process; a steady ${RATE} events/s stream round-robin over the users runs throughout. All TCP connections are destroyed at once (no close frame), one event per user is published while they are away, then every client reconnects after a uniform random delay in [0, ${JITTER_MS}) ms and retries with the SDK's full-jitter backoff (base 500 ms). Recovery time runs from the release to the moment the client is connected again and holds every seq of its user up to the missed event, contiguously; afterwards the stream stops and each client must hold exactly every seq its user was given (no hole, no duplicate, no resync). Ticket requests use a pool of 128 keep-alive connections. Each round starts fresh servers. Socket.IO runs with its defaults for recovery (2 min, auth middleware skipped on a recovered connection); its events are numbered in the server's memory for the check. Its in-memory adapter keeps every broadcast for the recovery window and each restore scans that list (socket.io-adapter SessionAwareAdapter.restoreSession: findIndex, then a filter over every later packet), so its recovery time grows with clients × retained events; socket.io-client is also heavier for the load generator than a bare ws client (see the load-gen columns).`,
      ],
      targets: [
        { bench: "6", target: `all ${n} back with contiguous seqs`, measured: results.gateway.map((r) => `${r.contiguous}/${r.clients}`).join(", "), met: allBack },
        { bench: "6", target: "time to full recovery ≤ Socket.IO's", measured: `${ratio.toFixed(2)}× (${spread(results.gateway.map((r) => r.fullRecoveryMs), 0)} vs ${spread(results.socketio.map((r) => r.fullRecoveryMs), 0)} ms)`, met: ratio <= 1 },
        { bench: "6", target: "Socket.IO: all recovered with contiguous seqs (sanity)", measured: results.socketio.map((r) => `${r.contiguous}/${r.clients}`).join(", "), met: sioAllBack },
      ],
      raw: results,
    };
  } finally {
    await lg.close();
    await held(redis.stop());
  }
}
