/**
 * Drill 1: Redis killed under load.
 *
 * Two real gateway processes share one redis-server. Clients (half the users,
 * each with one socket on each instance) receive a steady event stream
 * published through both instances. Redis is killed (SIGKILL, so its data is
 * gone, like a BASIC-tier Memorystore restart) and started again 5 s later.
 *
 * Pass when: no gateway process exits; every ticket request during the
 * outage gets 503 TICKET_STORE_UNAVAILABLE with Retry-After, within the 1 s
 * store timeout (+200 ms); a redeem during the outage closes with 4013;
 * no established socket closes; afterwards every client holds a contiguous
 * stream up to the last accepted seq of its user, having been told
 * resync_required where the history was lost; never a silent hole.
 */
import { spawnGatewayProc, type GatewayProc } from "../bench/lib/procs.js";
import { startRedis } from "../support/redis-server.js";
import { connectFirstFrame } from "../bench/lib/rawws.js";
import { check, drill, fmt, ORIGIN, publish, quick, sleep, StreamClient, tally, TEST_JWT_KEY, TEST_SERVICE_SECRET, ticket } from "./lib.js";

const CLIENTS = quick ? 50 : 200;
const OUTAGE_MS = 5000;
const RATE = quick ? 50 : 100;
const STORE_TIMEOUT_SLACK_MS = 200;

/** A pre-issued ticket redeemed while Redis is down: the first frame and the close code. */
async function redeemDuringOutage(port: number, t: string): Promise<{ code: number; frame: string; ms: number }> {
  const started = performance.now();
  const f = await connectFirstFrame({ port, path: `/ws?ticket=${t}`, origin: ORIGIN, keep: true });
  const frame = f.payload.toString();
  let code = -1;
  if (f.socket) {
    const socket = f.socket;
    code = await new Promise<number>((resolve) => {
      let buf = f.rest ?? Buffer.alloc(0);
      const look = () => {
        const at = buf.indexOf(Buffer.from([0x88]));
        if (at >= 0 && buf.length >= at + 4) resolve(buf.readUInt16BE(at + 2));
      };
      socket.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        look();
      });
      socket.on("close", () => resolve(-1));
      look();
      setTimeout(() => resolve(-2), 5000);
    });
    socket.destroy();
  }
  return { code, frame, ms: performance.now() - started };
}

drill(`drill 1: Redis killed under load (${CLIENTS} clients${quick ? ", quick" : ""})`, quick ? 60_000 : 120_000, async () => {
  const redis = await startRedis();
  const env = {
    NODE_ENV: "production",
    REDIS_URL: redis.url,
    ALLOWED_ORIGINS: ORIGIN,
    JWT_SECRET_KEY: TEST_JWT_KEY,
    SERVICE_SECRET: TEST_SERVICE_SECRET,
    TICKET_RATE_PER_IP: "100000",
  };
  const gws: GatewayProc[] = [await spawnGatewayProc({ env, name: "drill1-gw-a" }), await spawnGatewayProc({ env, name: "drill1-gw-b" })];
  try {
    const users = Array.from({ length: CLIENTS / 2 }, (_, i) => `drill1-user-${i}`);
    const clients: StreamClient[] = [];
    for (const user of users) for (let k = 0; k < gws.length; k++) clients.push(new StreamClient(user));
    for (let i = 0; i < clients.length; i += 20) await Promise.all(clients.slice(i, i + 20).map((c, j) => c.connect(gws[(i + j) % 2]!.url)));

    // A steady stream, round-robin over users and instances; the last accepted seq per user is the truth.
    const lastAccepted = new Map<string, number>();
    const publishes: Array<{ at: number; status: number; code?: string; retryAfter: string | null; ms: number }> = [];
    let streaming = true;
    const stream = (async () => {
      for (let i = 0; streaming; i++) {
        const user = users[i % users.length]!;
        void publish(gws[i % 2]!.url, user, { i }).then((r) => {
          publishes.push({ at: performance.now(), ...r });
          if (r.status === 202 && r.seq !== undefined) lastAccepted.set(user, Math.max(r.seq, lastAccepted.get(user) ?? 0));
        });
        await sleep(1000 / RATE);
      }
    })();
    await sleep(2000);
    // Tickets issued before the outage, redeemed during it.
    const preIssued = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => ticket(gws[i % 2]!.url, `drill1-late-${i}`)));

    const killedAt = performance.now();
    await redis.kill();
    const closesBefore = clients.reduce((a, c) => a + c.closes.length, 0);
    // During the outage: ticket requests and redeems.
    const outageTickets: Array<Awaited<ReturnType<typeof ticket>>> = [];
    const outageRedeems: Array<{ code: number; frame: string; ms: number }> = [];
    const probes: Promise<void>[] = [];
    for (let i = 0; performance.now() - killedAt < OUTAGE_MS - 1500; i++) {
      const gw = gws[i % 2]!;
      probes.push(ticket(gw.url, `drill1-probe-${i}`).then((t) => void outageTickets.push(t)));
      const pre = preIssued[i];
      if (pre?.ticket) probes.push(redeemDuringOutage(gw.port, pre.ticket).then((r) => void outageRedeems.push(r)));
      await sleep(250);
    }
    const probing = Promise.all(probes);
    await probing;
    const untilRestart = OUTAGE_MS - (performance.now() - killedAt);
    if (untilRestart > 0) await sleep(untilRestart);
    const closedDuringOutage = clients.reduce((a, c) => a + c.closes.length, 0) - closesBefore;
    const aliveDuringOutage = gws.every((g) => g.alive());

    await redis.restart();
    const restartedAt = performance.now();
    // The first ticket that succeeds again.
    let backAfterMs = NaN;
    for (let i = 0; performance.now() - restartedAt < 15_000; i++) {
      const t = await ticket(gws[i % 2]!.url, `drill1-after-${i}`);
      if (t.status === 201) {
        backAfterMs = performance.now() - restartedAt;
        break;
      }
      await sleep(100);
    }
    // Let the stream run a while on the new Redis, then stop and let it settle.
    await sleep(3000);
    streaming = false;
    await stream;
    await sleep(300);
    const settled = await Promise.all(
      clients.map((c) => c.until(() => c.pending.size === 0 && c.last === (lastAccepted.get(c.user) ?? 0), 10_000)),
    );
    const alive = gws.every((g) => g.alive());
    const health = await Promise.all(gws.map((g) => fetch(`${g.url}/readyz`).then((r) => r.status, () => 0)));

    const outageTicketCodes = tally(outageTickets, (t) => `${t.status} ${t.code ?? ""}`.trim());
    const badTickets = outageTickets.filter((t) => t.status !== 503 || t.code !== "TICKET_STORE_UNAVAILABLE" || t.retryAfter === null);
    const maxTicketMs = Math.max(...outageTickets.map((t) => t.ms));
    const redeemCodes = tally(outageRedeems, (r) => String(r.code));
    const duringOutage = publishes.filter((p) => p.at > killedAt + 1200 && p.at < killedAt + OUTAGE_MS);
    const publishDuring = tally(duringOutage, (p) => `${p.status} ${p.code ?? ""}`.trim());
    const incomplete = clients.filter((c, i) => !settled[i]);
    const resynced = clients.filter((c) => c.resyncs > 0).length;
    const dups = clients.reduce((a, c) => a + c.dups, 0);
    const holes = clients.reduce((a, c) => a + c.holesSeen, 0);
    for (const c of clients) c.close();

    const figures = [
      `${clients.length} sockets on 2 instances, outage ${OUTAGE_MS / 1000} s`,
      `tickets during outage ${JSON.stringify(outageTicketCodes)} (max ${fmt(maxTicketMs, 0)} ms)`,
      `redeems during outage closed ${JSON.stringify(redeemCodes)}`,
      `publishes during outage ${JSON.stringify(publishDuring)}`,
      `sockets closed during outage ${closedDuringOutage}`,
      `tickets back ${fmt(backAfterMs, 0)} ms after restart`,
      `clients contiguous to the last seq ${clients.length - incomplete.length}/${clients.length}, told resync_required ${resynced}, holes seen (then resumed) ${holes}, duplicates ${dups}`,
      `processes alive ${alive}, /readyz ${health.join(",")}`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("no gateway process exited", aliveDuringOutage && alive),
        check("ticket requests during the outage: 503 TICKET_STORE_UNAVAILABLE with Retry-After", outageTickets.length > 0 && badTickets.length === 0, JSON.stringify(outageTicketCodes)),
        check(`ticket 503s within the 1 s store timeout + ${STORE_TIMEOUT_SLACK_MS} ms`, maxTicketMs <= 1000 + STORE_TIMEOUT_SLACK_MS, `max ${fmt(maxTicketMs, 0)} ms`),
        check("redeems during the outage close with 4013", outageRedeems.length > 0 && outageRedeems.every((r) => r.code === 4013 && r.frame.includes("TICKET_STORE_UNAVAILABLE")), JSON.stringify(redeemCodes)),
        check("established sockets stayed open", closedDuringOutage === 0 && clients.every((c) => c.closes.length === 0), `${closedDuringOutage} closed`),
        check("publishes during the outage: 503 with Retry-After, none hung", duringOutage.length > 0 && duringOutage.every((p) => p.status === 503 && p.retryAfter !== null && p.ms < 1000 + STORE_TIMEOUT_SLACK_MS), JSON.stringify(publishDuring)),
        check("tickets are issued again after the restart", Number.isFinite(backAfterMs)),
        check("every client ends contiguous at its user's last seq (resync where history was lost); no silent hole", incomplete.length === 0, incomplete.slice(0, 3).map((c) => `${c.user}: last ${c.last}, want ${lastAccepted.get(c.user)}, pending ${[...c.pending].slice(0, 3).join(",")}`).join(" | ")),
        check("a lost history was announced with resync_required", resynced === clients.length, `${resynced}/${clients.length}`),
        check("no duplicates", dups === 0, String(dups)),
        check("/readyz 200 again", health.every((s) => s === 200), health.join(",")),
      ],
    };
  } finally {
    await Promise.all(gws.map((g) => g.stop()));
    await redis.stop();
  }
});
