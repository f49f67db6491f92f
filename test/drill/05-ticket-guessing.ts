/**
 * Drill 5: ticket guessing. GUESSES random tickets of the right shape
 * (`<43 base64url chars>.<expiry in base36>`, expiry in the future, so each
 * one costs the gateway a store round trip) are tried from one IP, as fast
 * as 32 parallel connects go.
 *
 * Pass when: none connects (no connection_established, every refusal is an
 * error frame and a 44xx close the contract allows), and the rate limit
 * engages: from some point on, guesses are refused with 4429 RATE_LIMITED
 * (or a 429 before the upgrade) instead of being redeemed. The gateway rate-
 * limits ticket *issuance*; whether anything limits failed *redemptions* is
 * exactly what this drill finds out. It fails when nothing does.
 */
import { randomBytes } from "node:crypto";
import { cpuMeter, redisPid, spawnGatewayProc } from "../bench/lib/procs.js";
import { connectFirstFrame } from "../bench/lib/rawws.js";
import { startRedis } from "../support/redis-server.js";
import { check, drill, fmt, ORIGIN, quick, tally, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "./lib.js";

const GUESSES = Number(process.env.DRILL5_GUESSES ?? (quick ? 10_000 : 100_000));
const PARALLEL = 32;

drill(`drill 5: ticket guessing (${GUESSES.toLocaleString("en-US")} random tickets)`, quick ? 60_000 : 300_000, async () => {
  const redis = await startRedis();
  const gw = await spawnGatewayProc({
    name: "drill5-gw",
    env: { NODE_ENV: "production", REDIS_URL: redis.url, ALLOWED_ORIGINS: ORIGIN, JWT_SECRET_KEY: TEST_JWT_KEY, SERVICE_SECRET: TEST_SERVICE_SECRET },
  });
  try {
    const rpid = await redisPid(redis.url);
    const redisStats = async () => {
      const { Redis } = await import("ioredis");
      const c = new Redis(redis.url);
      const info = await c.info("stats");
      c.disconnect();
      return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? NaN);
    };
    const commands0 = await redisStats();
    const gwCpu = cpuMeter(gw.pid);
    const redisCpu = cpuMeter(rpid);
    const outcomes: string[] = [];
    let connected = 0;
    let firstLimitedAt = -1;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < GUESSES) {
          const i = next++;
          const guess = `${randomBytes(32).toString("base64url")}.${(Date.now() + 30_000).toString(36)}`;
          const f = await connectFirstFrame({ port: gw.port, path: `/ws?ticket=${guess}`, origin: ORIGIN });
          let outcome: string;
          if (f.status !== 101) outcome = f.status === 0 ? "network error" : `HTTP ${f.status}`;
          else {
            const text = f.payload.toString();
            if (text.startsWith('{"type":"connection_established"')) {
              connected++;
              outcome = "CONNECTED";
            } else outcome = /"code":"([A-Z_]+)"/.exec(text)?.[1] ?? `frame ${text.slice(0, 40)}`;
          }
          if ((outcome === "RATE_LIMITED" || outcome === "HTTP 429") && firstLimitedAt < 0) firstLimitedAt = i;
          outcomes.push(outcome);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const g = gwCpu();
    const r = redisCpu();
    const commands = (await redisStats()) - commands0;
    const byOutcome = tally(outcomes, (o) => o);
    const limited = (byOutcome.RATE_LIMITED ?? 0) + (byOutcome["HTTP 429"] ?? 0);
    const allowed = new Set(["TICKET_INVALID", "TICKET_EXPIRED", "RATE_LIMITED", "HTTP 429"]);
    const unexpected = Object.keys(byOutcome).filter((o) => !allowed.has(o));
    const tail = outcomes.slice(-Math.min(1000, outcomes.length));
    const tailLimited = tail.filter((o) => o === "RATE_LIMITED" || o === "HTTP 429").length;
    const figures = [
      `${outcomes.length.toLocaleString("en-US")} guesses in ${fmt(seconds, 1)} s (${fmt(outcomes.length / seconds, 0)}/s from one IP)`,
      `outcomes ${JSON.stringify(byOutcome)}`,
      `connected ${connected}`,
      `rate-limited ${limited}${firstLimitedAt >= 0 ? ` (first at guess ${firstLimitedAt})` : ""}, of the last ${tail.length} ${tailLimited}`,
      `cost per guess: gateway CPU ${fmt((g.cpuMs * 1000) / outcomes.length, 0)} µs, redis-server CPU ${fmt((r.cpuMs * 1000) / outcomes.length, 0)} µs, ${fmt(commands / outcomes.length, 2)} Redis commands`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("none connects", connected === 0, String(connected)),
        check("every guess is refused the contract's way (4401 TICKET_INVALID/EXPIRED, or rate-limited)", unexpected.length === 0, unexpected.join(", ")),
        check("the rate limit engages on failed redemptions from one IP", limited > 0 && tailLimited > tail.length / 2, limited === 0 ? "no guess was ever rate-limited: nothing limits failed redemptions per IP" : `${tailLimited}/${tail.length} of the last guesses limited`),
        check("process still up", gw.alive()),
      ],
    };
  } finally {
    await gw.stop();
    await redis.stop();
  }
});
