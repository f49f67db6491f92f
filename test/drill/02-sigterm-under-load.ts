/**
 * Drill 2: SIGTERM under load.
 *
 * Two real gateway processes (A, B) on one redis-server. N sockets on A
 * (N/2 users with two sockets each), a steady event stream for those users
 * published through B. A gets SIGTERM. Every client that is closed with 4012
 * reconnects, as the SDK does after 4012, at once with a jitter in [0, 1 s),
 * to B (A no longer listens; a load balancer would do the same), with a new
 * ticket, and resumes.
 *
 * Pass when: 100% of A's sockets saw 4012 (SERVICE_RESTART) and none 1006;
 * A exited 0 within SHUTDOWN_GRACE_MS; every client resumed on B and ends
 * holding every seq of its user contiguously (nothing lost, nothing twice).
 */
import { spawnGatewayProc } from "../bench/lib/procs.js";
import { startRedis } from "../support/redis-server.js";
import { check, drill, fmt, ORIGIN, publish, quick, sleep, StreamClient, tally, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "./lib.js";

const SOCKETS = Number(process.env.DRILL2_SOCKETS ?? (quick ? 400 : 2000));
const GRACE_MS = 8000;
const RATE = 200;

drill(`drill 2: SIGTERM under load (${SOCKETS} sockets)`, 180_000, async () => {
  const redis = await startRedis();
  const env = {
    NODE_ENV: "production",
    REDIS_URL: redis.url,
    ALLOWED_ORIGINS: ORIGIN,
    JWT_SECRET_KEY: TEST_JWT_KEY,
    SERVICE_SECRET: TEST_SERVICE_SECRET,
    TICKET_RATE_PER_IP: "100000",
    SHUTDOWN_GRACE_MS: String(GRACE_MS),
  };
  const a = await spawnGatewayProc({ env, name: "drill2-gw-a" });
  const b = await spawnGatewayProc({ env, name: "drill2-gw-b" });
  try {
    const users = Array.from({ length: SOCKETS / 2 }, (_, i) => `drill2-user-${i}`);
    const clients = users.flatMap((u) => [new StreamClient(u), new StreamClient(u)]);
    for (let i = 0; i < clients.length; i += 50) await Promise.all(clients.slice(i, i + 50).map((c) => c.connect(a.url)));

    const lastAccepted = new Map<string, number>();
    const publishStatuses: Record<string, number> = {};
    let streaming = true;
    const inflight = new Set<Promise<unknown>>();
    const stream = (async () => {
      for (let i = 0; streaming; i++) {
        const user = users[i % users.length]!;
        const p = publish(b.url, user, { i }).then((r) => {
          publishStatuses[r.status] = (publishStatuses[r.status] ?? 0) + 1;
          if (r.status === 202 && r.seq !== undefined) lastAccepted.set(user, Math.max(r.seq, lastAccepted.get(user) ?? 0));
        });
        inflight.add(p);
        void p.then(() => inflight.delete(p));
        await sleep(1000 / RATE);
      }
      await Promise.all(inflight);
    })();
    await sleep(1500);

    // On 4012, come back to B at once (jitter < 1 s) with a new ticket and resume.
    const reconnectFailures: string[] = [];
    const resumed: Array<Promise<boolean>> = [];
    for (const c of clients) {
      resumed.push(
        new Promise<boolean>((resolve) => {
          c.ws!.once("close", (code) => {
            if (code !== 4012) return resolve(false);
            setTimeout(() => {
              const before = c.resumeCompletes;
              c.connect(b.url)
                .then(() => c.until(() => c.resumeCompletes > before || c.resyncs > 0, 15_000))
                .then(resolve, (err: Error) => {
                  reconnectFailures.push(err.message);
                  resolve(false);
                });
            }, Math.random() * 1000);
          });
        }),
      );
    }
    const sentAt = Date.now();
    a.child.kill("SIGTERM");
    const exit = await a.exited;
    const exitAfterMs = exit.at - sentAt;
    const resumeOk = await Promise.all(resumed);
    await sleep(1000);
    streaming = false;
    await stream;
    const settled = await Promise.all(clients.map((c) => c.until(() => c.pending.size === 0 && c.last === (lastAccepted.get(c.user) ?? 0), 10_000)));

    const firstCloses = clients.map((c) => c.closes[0]);
    const codes = tally(firstCloses, (cl) => (cl ? `${cl.code} ${cl.reason}` : "none"));
    const saw4012 = firstCloses.filter((cl) => cl?.code === 4012).length;
    const saw1006 = firstCloses.filter((cl) => cl?.code === 1006).length;
    const incomplete = clients.filter((_, i) => !settled[i]);
    const dups = clients.reduce((n, c) => n + c.dups, 0);
    const resyncs = clients.reduce((n, c) => n + c.resyncs, 0);
    for (const c of clients) c.close();
    const figures = [
      `${clients.length} sockets on A; closes ${JSON.stringify(codes)}`,
      `A exited ${exit.code ?? exit.signal} ${fmt(exitAfterMs, 0)} ms after SIGTERM (grace ${GRACE_MS} ms)`,
      `resumed on B ${resumeOk.filter(Boolean).length}/${clients.length}${reconnectFailures.length ? ` (failures ${JSON.stringify(tally(reconnectFailures, (e) => e))})` : ""}`,
      `contiguous to the last seq ${clients.length - incomplete.length}/${clients.length}, duplicates ${dups}, resyncs ${resyncs}`,
      `publishes ${JSON.stringify(publishStatuses)}`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("100% saw 4012 SERVICE_RESTART", saw4012 === clients.length, `${saw4012}/${clients.length}`),
        check("none saw 1006", saw1006 === 0, String(saw1006)),
        check(`A exited 0 within SHUTDOWN_GRACE_MS (${GRACE_MS} ms)`, exit.code === 0 && exitAfterMs <= GRACE_MS, `${exit.code ?? exit.signal} after ${exitAfterMs} ms`),
        check("every client resumed on B", resumeOk.every(Boolean), `${resumeOk.filter(Boolean).length}/${clients.length}`),
        check("nothing lost: every client contiguous at its user's last seq", incomplete.length === 0, incomplete.slice(0, 3).map((c) => `${c.user}: ${c.last}/${lastAccepted.get(c.user)}`).join(" | ")),
        check("nothing twice", dups === 0, String(dups)),
        check("no resync needed (history covers the gap)", resyncs === 0, String(resyncs)),
        check("B still serves", b.alive()),
      ],
    };
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await redis.stop();
  }
});
