/**
 * Drill: a Redis Cluster primary dies mid-stream.
 *
 * Three gateway instances share a Redis Cluster of 3 primaries with one
 * replica each (REDIS_CLUSTER_NODES). Users on every shard each hold two
 * sockets, on two instances; every user's agent publishes a steady stream of
 * events through any instance, retrying on 503 as agent backends do. Then
 * the primary serving the most users is killed (SIGKILL) while its replica
 * lags behind it: the replica is cut off first, so events the primary
 * acknowledged never reach it (replication is asynchronous; a real failover
 * loses its last writes the same way, only fewer). The replica takes over
 * after the cluster node timeout; the old primary comes back as a replica.
 * Publishing goes on throughout, then stops, and every client resumes once
 * more, like the SDK after a quiet period.
 *
 * Every client behaves like the SDK: it buffers out-of-order events until a
 * hole is filled, takes `resync_required` as a new baseline, and reconnects
 * with `resume` if its socket closes. The drill passes when:
 *
 * - no (user, epoch, seq) ever names two different events anywhere (a seq
 *   reissued after the failover rolled the counter back would be dropped by
 *   clients as a duplicate: the silent hole this drill is about);
 * - every client ends with contiguous seqs up to the user's latest seq in the
 *   user's current epoch, each gap in its stream closed by a replay or
 *   declared by `resync_required`;
 * - every acknowledged event reached every socket of its user, or that
 *   socket was told `resync_required`.
 *
 *   npx tsx test/drill/cluster-failover.ts [--users N] [--no-lag]
 *
 * `run()` is the drill for a runner; it resolves to its figures and
 * violations, and rejects only when the drill could not run.
 */
import { pathToFileURL } from "node:url";
import { createRedisStore, redisKeys, type Store } from "../../service/src/plugins/store/index.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { publishEvent, startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";

export interface ClusterFailoverOptions {
  /** Users, spread over the shards (default 24); each holds two sockets. */
  users?: number;
  /** Pause between one user's events (default 25 ms). */
  publishIntervalMs?: number;
  /** Cut the replica off before the kill, so the failover loses acknowledged events (default true). */
  lag?: boolean;
  log?: (line: string) => void;
}

export interface DrillResult {
  readonly name: string;
  readonly passed: boolean;
  readonly figures: Record<string, number | string>;
  readonly violations: string[];
}

export const name = "cluster-failover";

const INSTANCES = 3;
const STEADY_MS = 1500;
const LAG_MS = 300;
const AFTER_FAILOVER_MS = 2000;
const AFTER_REJOIN_MS = 1000;
const SETTLE_TIMEOUT_MS = 15_000;

export async function run(options: ClusterFailoverOptions = {}): Promise<DrillResult> {
  const userCount = options.users ?? 24;
  const interval = options.publishIntervalMs ?? 25;
  const lag = options.lag ?? true;
  const log = options.log ?? (() => undefined);
  const violations: string[] = [];
  const figures: Record<string, number | string> = {};

  const cluster = await startRedisCluster({ replicas: 1, nodeTimeoutMs: 1000 });
  const gateways: TestGateway[] = [];
  let observer: Store | undefined;
  const clients: DrillClient[] = [];
  try {
    for (let i = 0; i < INSTANCES; i++) {
      gateways.push(await startGateway({ env: { REDIS_CLUSTER_NODES: cluster.startupNodes, HISTORY_MAX_EVENTS: "5000" } }));
    }
    observer = createRedisStore({ cluster: { nodes: cluster.nodes.map((n) => ({ host: "127.0.0.1", port: n.port })) } });
    const users = Array.from({ length: userCount }, (_, i) => `drill-${i}`);
    const primaryOf = new Map<string, number>();
    for (const user of users) primaryOf.set(user, (await cluster.primaryOf(redisKeys.seq(user))).port);
    const victimPort = mostCommon([...primaryOf.values()]);
    const victim = cluster.nodes.find((n) => n.port === victimPort)!;
    const [replica] = await cluster.replicasOf(victim);
    if (!replica) throw new Error("the victim primary has no replica");
    const victimUsers = users.filter((u) => primaryOf.get(u) === victimPort);
    figures.users = userCount;
    figures["users on the failed shard"] = victimUsers.length;
    figures.sockets = userCount * 2;
    log(`cluster ${cluster.startupNodes}; ${userCount} users, ${victimUsers.length} on primary ${victimPort} (replica ${replica.port})`);

    for (const [i, user] of users.entries()) {
      for (const k of [0, 1]) clients.push(new DrillClient(user, gateways, (i + k) % INSTANCES));
    }
    await Promise.all(clients.map((c) => c.start()));

    // ── the stream ──
    const acks: Ack[] = [];
    let publishing = true;
    let attempts = 0;
    let unavailable = 0;
    let lastVictimFailure = 0;
    let firstVictimSuccessAfterKill = 0;
    let killedAt = 0;
    const publishers = users.map(async (user, i) => {
      await sleep((i * interval) / users.length);
      let n = 0;
      while (publishing) {
        const gw = gateways[(i + n) % INSTANCES]!;
        n++;
        attempts++;
        const started = Date.now();
        const res = await publishEvent(gw, user, { data: { n } }).catch(() => ({ status: 0, body: {} as Record<string, unknown> }));
        if (res.status === 202) {
          acks.push({ user, seq: res.body.seq as number, eventId: res.body.event_id as string, at: Date.now() });
          // The first publish sent after the kill that the failed shard accepted again.
          if (killedAt > 0 && started > killedAt && primaryOf.get(user) === victimPort && firstVictimSuccessAfterKill === 0) firstVictimSuccessAfterKill = Date.now();
        } else {
          unavailable++;
          if (primaryOf.get(user) === victimPort) lastVictimFailure = started;
        }
        await sleep(interval);
      }
    });

    await sleep(STEADY_MS);
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
    figures["kill → replica promoted to primary (ms)"] = promotedAt > 0 ? promotedAt - killedAt : "never";
    await cluster.waitHealthy(20_000);
    figures["kill → every node agrees on the new map (ms)"] = Date.now() - killedAt;
    log(`replica ${replica.port} took over after ${promotedAt - killedAt} ms`);
    await sleep(AFTER_FAILOVER_MS);
    await victim.restart();
    await cluster.waitHealthy(20_000);
    log(`old primary ${victimPort} rejoined as a replica`);
    await sleep(AFTER_REJOIN_MS);
    publishing = false;
    await Promise.all(publishers);

    figures["publishes attempted"] = attempts;
    figures["publishes acknowledged (202)"] = acks.length;
    figures["publishes refused (503, retried)"] = unavailable;
    figures["kill → last refused publish on the failed shard (ms)"] = lastVictimFailure > killedAt ? lastVictimFailure - killedAt : 0;
    figures["kill → first publish accepted on the failed shard (ms)"] = firstVictimSuccessAfterKill > 0 ? firstVictimSuccessAfterKill - killedAt : "none";
    const busUps = gateways.map((g) => g.logs.records.filter((r) => r.event === "bus_up" && Date.parse(String(r.time)) >= killedAt).map((r) => Date.parse(String(r.time))));
    figures["kill → bus up again on every instance (ms)"] = busUps.every((t) => t.length > 0) ? Math.max(...busUps.map((t) => t[0]!)) - killedAt : "not on every instance";

    // ── settle: every client resumes once more, then must be at the user's head ──
    const heads = new Map<string, { latestSeq: number; epoch: string }>();
    for (const user of users) heads.set(user, await observer.head(user));
    const settleStarted = Date.now();
    await Promise.all(clients.map((c) => c.settle(heads.get(c.user)!, SETTLE_TIMEOUT_MS)));
    figures["settle (ms)"] = Date.now() - settleStarted;

    // ── verdict ──
    const byKey = new Map<string, string>();
    for (const client of clients) {
      for (const [key, eventId] of client.seen) {
        const other = byKey.get(key);
        if (other !== undefined && other !== eventId) violations.push(`seq reissued in one epoch: ${key} is both ${other} and ${eventId}`);
        byKey.set(key, eventId);
      }
    }
    for (const client of clients) {
      const head = heads.get(client.user)!;
      if (client.epoch !== head.epoch) violations.push(`${client.label}: ends in epoch ${client.epoch}, the user's is ${head.epoch}`);
      else if (client.high !== head.latestSeq) violations.push(`${client.label}: ends at seq ${client.high}, the user's latest is ${head.latestSeq} (pending ${[...client.pending.keys()].join(",")})`);
      violations.push(...client.violations.map((v) => `${client.label}: ${v}`));
      if (client.resyncs === 0) {
        const received = new Set(client.seen.values());
        const missing = acks.filter((a) => a.user === client.user && !received.has(a.eventId));
        if (missing.length > 0) violations.push(`${client.label}: ${missing.length} acknowledged events never arrived and no resync_required said so (e.g. seq ${missing[0]!.seq})`);
      }
    }
    // Acknowledged events the promoted replica never had: they are not in the user's history.
    let rolledBack = 0;
    for (const user of victimUsers) {
      const history = await observer.readHistory(user, 0, { maxEvents: 5000, ttlMs: 900_000 });
      const kept = new Set(history.events.map((e) => (JSON.parse(e.body) as { event_id: string }).event_id));
      rolledBack += acks.filter((a) => a.user === user && !kept.has(a.eventId)).length;
    }
    figures["events delivered to sockets"] = clients.reduce((sum, c) => sum + c.delivered, 0);
    figures["events replayed on resume"] = clients.reduce((sum, c) => sum + c.replayed, 0);
    figures["sockets told resync_required"] = clients.filter((c) => c.resyncs > 0).length;
    figures["sockets told resync_required, failed shard / other shards"] = `${clients.filter((c) => c.resyncs > 0 && primaryOf.get(c.user) === victimPort).length} / ${clients.filter((c) => c.resyncs > 0 && primaryOf.get(c.user) !== victimPort).length}`;
    figures["reconnects"] = clients.reduce((sum, c) => sum + c.reconnects, 0);
    const resynced = clients.filter((c) => primaryOf.get(c.user) === victimPort && c.firstResyncAt > 0).map((c) => c.firstResyncAt - killedAt);
    figures["kill → last socket of the failed shard told resync_required (ms)"] = resynced.length > 0 ? Math.max(...resynced) : "none";
    figures["acknowledged events the new primary never had"] = rolledBack;
    figures["silent holes"] = violations.length;
    return { name, passed: violations.length === 0, figures, violations };
  } finally {
    for (const client of clients) client.stop();
    await observer?.close();
    await Promise.all(gateways.map((g) => g.close()));
    await cluster.stop();
  }
}

interface Ack {
  readonly user: string;
  readonly seq: number;
  readonly eventId: string;
  readonly at: number;
}

/** A client as the SDK is: ordered delivery from out-of-order frames, resync as a new baseline, reconnect and resume. */
class DrillClient {
  /** `${user}|${epoch}|${seq}` → event_id, of every event frame received, in the epoch of the connection that sent it. */
  readonly seen = new Map<string, string>();
  readonly violations: string[] = [];
  /** Events above `high` (of the client's epoch) that arrived before the ones below them: buffered, as the SDK does. */
  readonly pending = new Map<number, string>();
  /** The stream the client is in, and its last contiguous seq. */
  epoch = "";
  high = 0;
  delivered = 0;
  replayed = 0;
  resyncs = 0;
  firstResyncAt = 0;
  reconnects = 0;
  private socket: TestClient | undefined;
  private stopped = false;
  private waiters: Array<() => void> = [];

  constructor(
    readonly user: string,
    private readonly gateways: TestGateway[],
    private instance: number,
  ) {}

  get label(): string {
    return `${this.user}#${this.instance}`;
  }

  async start(): Promise<void> {
    await this.open(false);
  }

  stop(): void {
    this.stopped = true;
    this.socket?.close();
  }

  /** Sends resume until the client is at `head` (or was told to resync to it). */
  async settle(head: { latestSeq: number; epoch: string }, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(this.epoch === head.epoch && this.high >= head.latestSeq) && Date.now() < deadline) {
      try {
        this.socket?.send({ type: "resume", last_seq: this.high, epoch: this.epoch });
      } catch {
        // closed: reconnecting
      }
      await this.changed(Math.min(1000, deadline - Date.now()));
    }
  }

  private changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.max(1, ms));
      this.waiters.push(() => (clearTimeout(timer), resolve()));
    });
  }

  private async open(resume: boolean): Promise<void> {
    for (let attempt = 0; attempt < 50 && !this.stopped; attempt++) {
      const gw = this.gateways[this.instance]!;
      try {
        const socket = await TestClient.connect(gw, await ticketFor(gw, this.user));
        const established = await socket.waitForType("connection_established", { timeoutMs: 5000 });
        // What the connection says about its stream: frames on it are in this epoch until it says otherwise.
        const connection = { epoch: established.epoch as string };
        const backlog = socket.frames.slice(socket.frames.indexOf(established) + 1);
        this.socket = socket;
        if (!resume) {
          this.epoch = connection.epoch;
          this.high = established.latest_seq as number;
        }
        socket.socket.on("message", (data) => this.onFrame(connection, JSON.parse(data.toString()) as Record<string, unknown>));
        socket.socket.once("close", (code) => {
          if (this.stopped) return;
          this.reconnects++;
          this.instance = (this.instance + 1) % this.gateways.length;
          void this.open(true).catch((err: unknown) => this.violations.push(`could not reconnect after close ${code}: ${String(err)}`));
        });
        for (const frame of backlog) this.onFrame(connection, frame);
        if (resume) socket.send({ type: "resume", last_seq: this.high, epoch: this.epoch });
        return;
      } catch {
        // the store is failing over, or the ticket was refused: try again, on the next instance
        this.instance = (this.instance + 1) % this.gateways.length;
        await sleep(200);
      }
    }
    if (!this.stopped) this.violations.push("could not connect in 50 attempts");
  }

  private onFrame(connection: { epoch: string }, frame: Record<string, unknown>): void {
    if (frame.type === "resync_required") {
      this.resyncs++;
      if (this.firstResyncAt === 0) this.firstResyncAt = Date.now();
      connection.epoch = frame.epoch as string;
      this.epoch = connection.epoch;
      this.high = frame.latest_seq as number;
      for (const seq of [...this.pending.keys()]) if (seq <= this.high) this.pending.delete(seq);
      this.advance();
    } else if (frame.type === "resume_complete") {
      this.replayed += frame.replayed as number;
    } else if (typeof frame.seq === "number" && typeof frame.event_id === "string") {
      const seq = frame.seq;
      const key = `${this.user}|${connection.epoch}|${seq}`;
      const known = this.seen.get(key);
      if (known !== undefined && known !== frame.event_id) this.violations.push(`seq ${seq} of epoch ${connection.epoch} arrived as two events (${known}, ${frame.event_id})`);
      this.seen.set(key, frame.event_id);
      // An event of another stream than the client's: the connection's resync_required follows (the client resumed with its old epoch).
      if (connection.epoch === this.epoch && seq > this.high) {
        this.pending.set(seq, frame.event_id);
        this.advance();
      }
    }
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  private advance(): void {
    while (this.pending.has(this.high + 1)) {
      this.pending.delete(this.high + 1);
      this.high++;
      this.delivered++;
    }
  }
}

function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0]![0];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Run alone: npx tsx test/drill/cluster-failover.ts [--users N] [--no-lag]
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const at = process.argv.indexOf("--users");
  const users = at >= 0 ? Number(process.argv[at + 1]) : undefined;
  const started = Date.now();
  const result = await run({ users, lag: !process.argv.includes("--no-lag"), log: (line) => process.stderr.write(`${line}\n`) });
  const lines = [`## Drill: ${result.name} — ${result.passed ? "PASSED" : "FAILED"} (${((Date.now() - started) / 1000).toFixed(1)} s)`, "", "| figure | value |", "|---|---|"];
  for (const [key, value] of Object.entries(result.figures)) lines.push(`| ${key} | ${value} |`);
  if (result.violations.length > 0) lines.push("", "Violations:", ...result.violations.slice(0, 50).map((v) => `- ${v}`));
  // Written before exiting: a pipe is written asynchronously.
  process.stdout.write(`${lines.join("\n")}\n`, () => process.exit(result.passed ? 0 : 1));
}
