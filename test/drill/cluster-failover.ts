/**
 * Drill: a Redis Cluster primary killed mid-stream.
 *
 * Three real gateway processes share a Redis Cluster of 3 primaries with one
 * replica each (REDIS_CLUSTER_NODES). Users on every shard each hold two
 * sockets, on two instances; every user's agent publishes a steady stream of
 * events through the instances in turn, carrying on after a 503 as agent
 * backends do. Then the primary serving the most users is killed (SIGKILL)
 * while its replica lags behind: the replica is cut off first, so events the
 * primary acknowledged never reach it (replication is asynchronous: a real
 * failover loses its last writes the same way, only fewer). The replica takes
 * over after the cluster node timeout; the old primary comes back as a
 * replica. The stream goes on, then stops, and every client resumes once more.
 *
 * Every client follows the SDK's rules: it buffers out-of-order events until
 * a hole is filled, sends `resume` on a hole or after a reconnect, and takes
 * `resync_required` as a new baseline. Pass when:
 *
 * - no (user, epoch, seq) ever names two different events (a seq reissued
 *   after the failover rolled the counter back is dropped as a duplicate:
 *   the silent hole this drill is about);
 * - every client ends with contiguous seqs up to its user's latest seq, in
 *   the user's current epoch;
 * - every acknowledged event reached every socket of its user, or that
 *   socket was told `resync_required`;
 * - no gateway process exited, and every /readyz is 200 again.
 *
 *   npx tsx test/drill/cluster-failover.ts [--quick] [--no-lag]
 *
 * `run()` is the drill without the process around it (figures and checks).
 */
import { pathToFileURL } from "node:url";
import { createRedisStore, redisKeys, type Store } from "../../service/src/plugins/store/index.js";
import { spawnGatewayProc, type GatewayProc } from "../bench/lib/procs.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { publishEvent, TestClient, ticketFor } from "../support/gateway.js";
import { check, drill, fmt, ORIGIN, quick, sleep, TEST_JWT_KEY, TEST_SERVICE_SECRET, type Check } from "./lib.js";

export interface ClusterFailoverOptions {
  /** Users, spread over the shards (default 24, quick 12); each holds two sockets. */
  readonly users?: number;
  /** Pause between one user's events (default 25 ms). */
  readonly publishIntervalMs?: number;
  /** Cut the replica off before the kill, so the failover loses acknowledged events (default true). */
  readonly lag?: boolean;
  readonly log?: (line: string) => void;
}

const INSTANCES = 3;
const LAG_MS = 300;

export async function run(options: ClusterFailoverOptions = {}): Promise<{ figures: string; checks: Check[] }> {
  const userCount = options.users ?? (quick ? 12 : 24);
  const interval = options.publishIntervalMs ?? 25;
  const lag = options.lag ?? true;
  const log = options.log ?? (() => undefined);
  const steadyMs = quick ? 1000 : 1500;
  const afterFailoverMs = quick ? 1000 : 2000;
  const afterRejoinMs = quick ? 500 : 1000;

  const cluster = await startRedisCluster({ replicas: 1, nodeTimeoutMs: 1000 });
  const gws: GatewayProc[] = [];
  let observer: Store | undefined;
  const clients: DrillClient[] = [];
  try {
    const env = {
      NODE_ENV: "production",
      REDIS_CLUSTER_NODES: cluster.startupNodes,
      ALLOWED_ORIGINS: ORIGIN,
      JWT_SECRET_KEY: TEST_JWT_KEY,
      SERVICE_SECRET: TEST_SERVICE_SECRET,
      TICKET_RATE_PER_IP: "100000",
      TICKET_RATE_PER_USER: "100000",
      HISTORY_MAX_EVENTS: "5000",
    };
    for (let i = 0; i < INSTANCES; i++) gws.push(await spawnGatewayProc({ env, name: `drill-cluster-gw-${i}` }));
    observer = createRedisStore({ cluster: { nodes: cluster.nodes.map((n) => ({ host: "127.0.0.1", port: n.port })) } });

    const users = Array.from({ length: userCount }, (_, i) => `drill-cluster-${i}`);
    const primaryOf = new Map<string, number>();
    for (const user of users) primaryOf.set(user, (await cluster.primaryOf(redisKeys.seq(user))).port);
    const victimPort = mostCommon([...primaryOf.values()]);
    const victim = cluster.nodes.find((n) => n.port === victimPort)!;
    const [replica] = await cluster.replicasOf(victim);
    if (!replica) throw new Error("the primary to kill has no replica");
    const onVictim = (user: string) => primaryOf.get(user) === victimPort;
    log(`cluster ${cluster.startupNodes}; ${userCount} users, ${users.filter(onVictim).length} on primary ${victimPort} (replica ${replica.port})`);

    for (const [i, user] of users.entries()) for (const k of [0, 1]) clients.push(new DrillClient(user, gws, (i + k) % INSTANCES));
    await Promise.all(clients.map((c) => c.open(false)));

    // ── the stream ──
    const acks: Array<{ user: string; seq: number; eventId: string }> = [];
    let publishing = true;
    let attempts = 0;
    let refused = 0;
    let killedAt = 0;
    let lastRefusedOnVictim = 0;
    let firstAcceptedOnVictim = 0;
    const publishers = users.map(async (user, i) => {
      await sleep((i * interval) / users.length);
      for (let n = 0; publishing; n++) {
        attempts++;
        const started = Date.now();
        const res = await publishEvent(gws[(i + n) % INSTANCES]!, user, { data: { n } }).catch(() => ({ status: 0, body: {} as Record<string, unknown> }));
        if (res.status === 202) {
          acks.push({ user, seq: res.body.seq as number, eventId: res.body.event_id as string });
          if (killedAt > 0 && started > killedAt && onVictim(user) && firstAcceptedOnVictim === 0) firstAcceptedOnVictim = Date.now();
        } else {
          refused++;
          if (killedAt > 0 && onVictim(user)) lastRefusedOnVictim = Date.now();
        }
        await sleep(interval);
      }
    });

    await sleep(steadyMs);
    if (lag) {
      // Cut the replica off: what the primary acknowledges from now on exists only on the primary.
      replica.pause();
      await victim.call("CLIENT", "KILL", "TYPE", "replica");
      await sleep(LAG_MS);
    }
    killedAt = Date.now();
    await victim.kill();
    if (lag) replica.resume();
    log(`killed primary ${victimPort}`);
    let promotedAt = 0;
    for (let i = 0; i < 400 && promotedAt === 0; i++) {
      const role = (await replica.call("ROLE").catch(() => [])) as unknown[];
      if (role[0] === "master") promotedAt = Date.now();
      else await sleep(50);
    }
    await cluster.waitHealthy(20_000);
    log(`replica ${replica.port} promoted after ${promotedAt - killedAt} ms`);
    await sleep(afterFailoverMs);
    await victim.restart();
    await cluster.waitHealthy(20_000);
    log(`old primary ${victimPort} back, as a replica`);
    await sleep(afterRejoinMs);
    publishing = false;
    await Promise.all(publishers);

    // ── settle: every client resumes once more and must reach its user's head ──
    const heads = new Map<string, { latestSeq: number; epoch: string }>();
    for (const user of users) heads.set(user, await observer.head(user));
    const settled = await Promise.all(clients.map((c) => c.settle(heads.get(c.user)!, 15_000)));

    // ── verdict ──
    const reissued: string[] = [];
    const byKey = new Map<string, string>();
    for (const client of clients) {
      for (const [key, eventId] of client.seen) {
        const other = byKey.get(key);
        if (other !== undefined && other !== eventId) reissued.push(`${key}: ${other} and ${eventId}`);
        byKey.set(key, eventId);
      }
      reissued.push(...client.reissued);
    }
    const notAtHead = clients.filter((c, i) => !settled[i]);
    const unannounced = clients.filter((c) => {
      if (c.resyncs > 0) return false;
      const received = new Set(c.seen.values());
      return acks.some((a) => a.user === c.user && !received.has(a.eventId));
    });
    let lost = 0; // acknowledged, then gone with the primary: not in the user's history now
    for (const user of users.filter(onVictim)) {
      const history = await observer.readHistory(user, 0, { maxEvents: 5000, ttlMs: 900_000 });
      const kept = new Set(history.events.map((e) => (JSON.parse(e.body) as { event_id: string }).event_id));
      lost += acks.filter((a) => a.user === user && !kept.has(a.eventId)).length;
    }
    const busUp = gws.map((g) => firstLogTime(g.log(), '"event":"bus_up"', killedAt));
    const alive = gws.every((g) => g.alive());
    const health = await Promise.all(gws.map((g) => fetch(`${g.url}/readyz`).then((r) => r.status, () => 0)));
    const resynced = (victimShard: boolean) => clients.filter((c) => c.resyncs > 0 && onVictim(c.user) === victimShard).length;
    const resyncLatest = Math.max(0, ...clients.filter((c) => onVictim(c.user) && c.firstResyncAt > 0).map((c) => c.firstResyncAt - killedAt));

    const figures = [
      `${clients.length} sockets of ${userCount} users on ${INSTANCES} instances, ${users.filter(onVictim).length} users on the killed primary`,
      `replica promoted ${fmt(promotedAt - killedAt, 0)} ms after the kill, every instance's bus up again after ${busUp.every((t) => t > 0) ? fmt(Math.max(...busUp) - killedAt, 0) : "never"} ms`,
      `publishes ${acks.length} accepted / ${refused} refused of ${attempts}; on the killed shard refused until ${fmt(lastRefusedOnVictim > 0 ? lastRefusedOnVictim - killedAt : 0, 0)} ms, accepted again from ${fmt(firstAcceptedOnVictim > 0 ? firstAcceptedOnVictim - killedAt : NaN, 0)} ms`,
      `acknowledged events the new primary never had ${lost}${lag ? " (replica cut off first)" : ""}`,
      `told resync_required: killed shard ${resynced(true)}/${clients.filter((c) => onVictim(c.user)).length} sockets (last ${fmt(resyncLatest, 0)} ms after the kill), other shards ${resynced(false)}`,
      `events delivered ${clients.reduce((a, c) => a + c.delivered, 0)}, holes seen (then resumed) ${clients.reduce((a, c) => a + c.holesSeen, 0)}, replayed ${clients.reduce((a, c) => a + c.replayed, 0)}, reconnects ${clients.reduce((a, c) => a + c.reconnects, 0)}`,
      `processes alive ${alive}, /readyz ${health.join(",")}`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("no (user, epoch, seq) names two events: no seq reissued after the failover", reissued.length === 0, reissued.slice(0, 3).join(" | ")),
        check("every client ends contiguous at its user's latest seq, in its current epoch", notAtHead.length === 0, notAtHead.slice(0, 3).map((c) => `${c.label}: ${c.epoch}/${c.high}, want ${heads.get(c.user)?.epoch}/${heads.get(c.user)?.latestSeq}`).join(" | ")),
        check("every acknowledged event reached every socket of its user, or the socket was told resync_required", unannounced.length === 0, unannounced.slice(0, 3).map((c) => c.label).join(", ")),
        check("the failover was survived: a replica took over and the bus came back on every instance", promotedAt > 0 && busUp.every((t) => t > 0)),
        check("no gateway process exited; /readyz 200 again", alive && health.every((s) => s === 200), health.join(",")),
      ],
    };
  } finally {
    for (const client of clients) client.stop();
    await observer?.close();
    await Promise.all(gws.map((g) => g.stop()));
    await cluster.stop();
  }
}

/** One socket's view of its user's stream, as the SDK keeps it, across reconnects. */
class DrillClient {
  /** `${user}|${epoch}|${seq}` → event_id of every event frame, in the epoch of the connection that sent it. */
  readonly seen = new Map<string, string>();
  readonly reissued: string[] = [];
  /** Events above `high` that came before the ones below them, buffered until the hole is filled. */
  readonly pending = new Set<number>();
  epoch = "";
  high = 0;
  delivered = 0;
  holesSeen = 0;
  replayed = 0;
  resyncs = 0;
  firstResyncAt = 0;
  reconnects = 0;
  private socket: TestClient | undefined;
  private stopped = false;
  private waiters: Array<() => void> = [];

  constructor(
    readonly user: string,
    private readonly gws: GatewayProc[],
    private instance: number,
  ) {}

  get label(): string {
    return `${this.user}#${this.instance}`;
  }

  /** Connects (on this instance, else the next ones), and resumes when it had a stream before. */
  async open(resume: boolean): Promise<void> {
    for (let attempt = 0; attempt < 50 && !this.stopped; attempt++) {
      const gw = this.gws[this.instance]!;
      try {
        const socket = await TestClient.connect(gw, await ticketFor(gw, this.user));
        const established = await socket.waitForType("connection_established", { timeoutMs: 5000 });
        // The connection's stream: its frames are in this epoch until it says resync_required.
        const connection = { epoch: established.epoch as string };
        const backlog = socket.frames.slice(socket.frames.indexOf(established) + 1);
        this.socket = socket;
        if (!resume) {
          this.epoch = connection.epoch;
          this.high = established.latest_seq as number;
        }
        socket.socket.on("message", (data) => this.onFrame(connection, JSON.parse(data.toString()) as Record<string, unknown>));
        socket.socket.once("close", () => {
          if (this.stopped) return;
          this.reconnects++;
          this.instance = (this.instance + 1) % this.gws.length;
          void this.open(true);
        });
        for (const frame of backlog) this.onFrame(connection, frame);
        if (resume) this.resume();
        return;
      } catch {
        // the store is failing over, or the ticket was refused: again, on the next instance
        this.instance = (this.instance + 1) % this.gws.length;
        await sleep(200);
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.socket?.close();
  }

  /** Resumes until the client is at `head`; false if it is not within the time. */
  async settle(head: { latestSeq: number; epoch: string }, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const done = () => this.epoch === head.epoch && this.high === head.latestSeq && this.pending.size === 0;
    while (!done() && Date.now() < deadline) {
      this.resume();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, Math.min(1000, deadline - Date.now())));
        this.waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
    return done();
  }

  private resume(): void {
    try {
      this.socket?.send({ type: "resume", last_seq: this.high, epoch: this.epoch });
    } catch {
      // closed: the reconnect resumes
    }
  }

  private onFrame(connection: { epoch: string }, frame: Record<string, unknown>): void {
    if (frame.type === "resync_required") {
      this.resyncs++;
      if (this.firstResyncAt === 0) this.firstResyncAt = Date.now();
      connection.epoch = this.epoch = frame.epoch as string;
      this.high = frame.latest_seq as number;
      for (const seq of [...this.pending]) if (seq <= this.high) this.pending.delete(seq);
      this.advance();
    } else if (frame.type === "resume_complete") {
      this.replayed += frame.replayed as number;
    } else if (typeof frame.seq === "number" && typeof frame.event_id === "string") {
      const key = `${this.user}|${connection.epoch}|${frame.seq}`;
      const known = this.seen.get(key);
      if (known !== undefined && known !== frame.event_id) this.reissued.push(`${key}: ${known} and ${frame.event_id}`);
      this.seen.set(key, frame.event_id);
      // An event of another stream than the client's (it resumed with its old epoch): the resync_required follows.
      if (connection.epoch === this.epoch && frame.seq > this.high && !this.pending.has(frame.seq)) {
        if (frame.seq > this.high + 1 && this.pending.size === 0) {
          this.holesSeen++;
          this.resume();
        }
        this.pending.add(frame.seq);
        this.advance();
      }
    }
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  private advance(): void {
    while (this.pending.delete(this.high + 1)) {
      this.high++;
      this.delivered++;
    }
  }
}

/** Epoch ms of the first log line holding `needle` at or after `since`, or 0. */
function firstLogTime(log: string, needle: string, since: number): number {
  for (const line of log.split("\n")) {
    if (!line.includes(needle)) continue;
    const time = Date.parse(/"time":"([^"]+)"/.exec(line)?.[1] ?? "");
    if (time >= since) return time;
  }
  return 0;
}

function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0]![0];
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const lag = !process.argv.includes("--no-lag");
  drill(`drill: Redis Cluster primary killed mid-stream${lag ? " behind a lagging replica" : ""}${quick ? " (quick)" : ""}`, quick ? 60_000 : 120_000, () =>
    run({ lag, log: (line) => process.stderr.write(`${line}\n`) }),
  );
}
