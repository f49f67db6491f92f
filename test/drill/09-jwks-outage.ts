/**
 * Drill 9: the auth service's JWKS endpoint taken away under load
 * (docs/protocol.md §8.5, docs/operations.md "JWKS outage").
 *
 * A local https JWKS endpoint (a throwaway CA the gateways trust through
 * NODE_EXTRA_CA_CERTS) and two real gateway processes trusting only it, on
 * one redis-server, behind a round-robin TCP front end. SDK clients
 * (GatewayClient, in Node) hold connections through the front end, and some
 * of them disconnect and connect again all along; a probe asks every
 * instance for a ticket every 100 ms with a fresh token. The endpoint then
 * resets every connection for OUTAGE_MS. One second in, instance B restarts
 * (a new instance that has never fetched the set, as a scale-out or a crash
 * during the outage gives).
 *
 * Pass when: no 401 anywhere; every refusal is 503 AUTH_UNAVAILABLE with
 * Retry-After; the instance holding the set serves throughout (stale-if-
 * error); the SDK never asks the app for a forced token refresh and waits
 * at least Retry-After before asking again; the gateways' JWKS fetches stay
 * bounded; every instance issues tickets again within 5 s of the endpoint's
 * return; every SDK client ends connected.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { GatewayClient } from "../../service/client/GatewayClient.js";
import type { WebSocketConstructor } from "../../service/client/types.js";
import { KEY_SET_POLICY } from "../../service/src/auth/jwks.js";
import { startRedis } from "../support/redis-server.js";
import { makeCertificates } from "../support/redis-cluster.js";
import { JwksServer, signingKey, signWith } from "../support/jwks-server.js";
import { Fleet } from "./fleet.js";
import { check, drill, fmt, ORIGIN, quick, sleep, tally, ticket } from "./lib.js";

const OUTAGE_MS = Number(process.env.DRILL9_OUTAGE_MS ?? (quick ? 8000 : 30_000));
const CLIENTS = quick ? 16 : 50;
const CHURN_PER_S = quick ? 4 : 10;
const PROBE_MS = 100;
const FULL_SERVICE_WITHIN_MS = 5000;

interface Probe {
  readonly at: number;
  readonly instance: string;
  readonly status: number | string;
  readonly code?: string;
  readonly retryAfter: string | null;
}

interface SdkRequest {
  readonly at: number;
  readonly status: number | string;
  readonly code?: string;
  readonly retryAfter: string | null;
}

drill(`drill 9: JWKS endpoint away for ${OUTAGE_MS / 1000} s under load (${CLIENTS} SDK clients, 2 instances)`, quick ? 110_000 : 300_000, async () => {
  const dir = await mkdtemp(join(tmpdir(), "drill9-"));
  const certs = await makeCertificates(dir);
  const jwks = new JwksServer();
  const key = await signingKey("auth-key-1");
  jwks.keys = [key.jwk];
  await jwks.start(0, { cert: await readFile(certs.certFile, "utf8"), key: await readFile(certs.keyFile, "utf8") });
  const redis = await startRedis();
  const fleet = await Fleet.start(
    {
      NODE_ENV: "production",
      REDIS_URL: redis.url,
      ALLOWED_ORIGINS: ORIGIN,
      AUTH_JWKS_URL: jwks.url,
      NODE_EXTRA_CA_CERTS: certs.caFile,
      SERVICE_SECRET: "drill9-service-secret-0123456789abcdef0123456789",
      TICKET_RATE_PER_IP: "1000000",
      TICKET_RATE_PER_USER: "100000",
      SHUTDOWN_GRACE_MS: "4000",
      LOG_LEVEL: "warn",
    },
    2,
    "drill9-gw",
  );
  const front = await fleet.balancer();
  const clients: Array<{ client: GatewayClient; requests: SdkRequest[]; tokens: boolean[] }> = [];
  try {
    // SDK clients, each with its own recording fetch and token counter.
    for (let i = 0; i < CLIENTS; i++) {
      const user = `drill9-user-${i}`;
      const requests: SdkRequest[] = [];
      const tokens: boolean[] = [];
      const client = new GatewayClient({
        url: front.url,
        WebSocket: WebSocket as unknown as WebSocketConstructor,
        window: null,
        fetch: recordingFetch(requests),
        getToken: ({ forceRefresh }) => (tokens.push(forceRefresh), signWith(key, user)),
      });
      clients.push({ client, requests, tokens });
      client.connect();
    }
    await until(() => clients.every((c) => c.client.state === "open"), 30_000, "every SDK client connected");

    const probes: Probe[] = [];
    let running = true;
    const probing = (async () => {
      while (running) {
        await Promise.all(
          fleet.instances.map(async (g) => {
            const at = Date.now();
            const r = await ticket(g.url, `probe-${at}`, await signWith(key, `probe-${at}`)).catch((err: Error) => ({ status: err.message, code: undefined, retryAfter: null }));
            probes.push({ at, instance: g.name, status: r.status, code: r.code, retryAfter: r.retryAfter });
          }),
        );
        await sleep(PROBE_MS);
      }
    })();
    const churning = (async () => {
      for (let i = 0; running; i++) {
        // Only an open client: one in its backoff is left to its schedule (which the checks below judge).
        const c = clients[i % clients.length]!.client;
        if (c.state === "open") {
          c.close();
          c.connect();
        }
        await sleep(1000 / CHURN_PER_S);
      }
    })();

    await sleep(2000);
    const hitsBefore = jwks.hits;
    const tokensBefore = clients.reduce((n, c) => n + c.tokens.length, 0);
    const down = Date.now();
    jwks.mode = "reset";
    await sleep(1000);
    const cold = await fleet.replace(1); // B restarts during the outage: it never fetched the set
    const warm = fleet.instances[0]!;
    await sleep(Math.max(0, down + OUTAGE_MS - Date.now()));
    const outageHits = jwks.hits - hitsBefore;
    const outageTokens = clients.reduce((n, c) => n + c.tokens.length, 0) - tokensBefore;
    const back = Date.now();
    jwks.mode = "up";
    await sleep(FULL_SERVICE_WITHIN_MS + 2000);
    running = false;
    await Promise.all([probing, churning]);
    const allOpen = await until(() => clients.every((c) => c.client.state === "open"), 30_000, "").then(() => true, () => false);

    // Every instance serves from `fullAt` on: its probes after that are all 201.
    const fullAt = Math.max(...fleet.instances.map((g) => servingSince(probes.filter((p) => p.instance === g.name), back)));
    const all = [...probes, ...clients.flatMap((c) => c.requests)];
    const unauthorized = all.filter((p) => p.status === 401);
    const refusals = all.filter((p) => p.status !== 201);
    const badRefusals = refusals.filter((p) => !(p.status === 503 && p.code === "AUTH_UNAVAILABLE" && Number(p.retryAfter) >= 1));
    const duringOutage = (p: Probe) => p.at >= down && p.at < back;
    const warmProbes = probes.filter((p) => p.instance === warm.name && duringOutage(p));
    const coldProbes = probes.filter((p) => p.instance === cold.name && duringOutage(p));
    const forced = clients.reduce((n, c) => n + c.tokens.filter(Boolean).length, 0);
    const early = clients.flatMap((c) => tooSoon(c.requests));
    const maxFetches = fleet.instances.length * (Math.ceil(OUTAGE_MS / KEY_SET_POLICY.retryMs) + 2);
    const figures = [
      `probes ${JSON.stringify(tally(probes, (p) => `${p.status}${p.code ? ` ${p.code}` : ""}`))}`,
      `during the outage: warm instance ${JSON.stringify(tally(warmProbes, (p) => String(p.status)))}, cold instance ${JSON.stringify(tally(coldProbes, (p) => `${p.status} retry-after ${p.retryAfter ?? "-"}`))}`,
      `SDK ticket requests ${JSON.stringify(tally(clients.flatMap((c) => c.requests), (r) => String(r.status)))}`,
      `SDK token requests during the outage ${outageTokens} (${CLIENTS} clients, ${fmt(outageTokens / CLIENTS / (OUTAGE_MS / 1000), 2)}/client/s with ${CHURN_PER_S} reconnects/s), forced refreshes ${forced}`,
      `JWKS fetch attempts during the outage ${outageHits} (bound ${maxFetches})`,
      `full service ${fmt((fullAt - back) / 1000, 2)} s after the endpoint's return`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("no 401", unauthorized.length === 0, String(unauthorized.length)),
        check("every refusal is 503 AUTH_UNAVAILABLE with Retry-After", badRefusals.length === 0, JSON.stringify(badRefusals.slice(0, 3))),
        check("the instance holding the key set served throughout", warmProbes.length > 0 && warmProbes.every((p) => p.status === 201), JSON.stringify(tally(warmProbes, (p) => String(p.status)))),
        check("the instance started during the outage refused with 503 (the drill saw the outage)", coldProbes.some((p) => p.status === 503)),
        check("no forced token refresh by the SDK", forced === 0, String(forced)),
        check("the SDK waited Retry-After before asking again", early.length === 0, JSON.stringify(early.slice(0, 3))),
        check("JWKS fetches bounded", outageHits <= maxFetches, `${outageHits} > ${maxFetches}`),
        check(`full service within ${FULL_SERVICE_WITHIN_MS / 1000} s of the return`, fullAt - back <= FULL_SERVICE_WITHIN_MS, `${fullAt - back} ms`),
        check("every SDK client connected at the end", allOpen),
        check("no gateway process died", fleet.instances.every((g) => g.alive())),
      ],
    };
  } finally {
    for (const c of clients) c.client.close();
    await front.close();
    await fleet.stop();
    await redis.stop();
    await jwks.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

/** fetch that records each ticket request's status, error code and Retry-After. */
function recordingFetch(requests: SdkRequest[]): typeof fetch {
  return async (input, init) => {
    const at = Date.now();
    try {
      const response = await fetch(input, init);
      const body = (await response.clone().json().catch(() => ({}))) as { error?: { code?: string } };
      requests.push({ at, status: response.status, code: body.error?.code, retryAfter: response.headers.get("retry-after") });
      return response;
    } catch (err) {
      requests.push({ at, status: (err as Error).message, retryAfter: null });
      throw err;
    }
  };
}

/** The requests that came sooner after a 503 than its Retry-After said (50 ms of slack for timers). */
function tooSoon(requests: readonly SdkRequest[]): Array<{ after: number; retryAfter: string | null }> {
  const out: Array<{ after: number; retryAfter: string | null }> = [];
  for (let i = 1; i < requests.length; i++) {
    const previous = requests[i - 1]!;
    const after = requests[i]!.at - previous.at;
    if (previous.status === 503 && after < Number(previous.retryAfter) * 1000 - 50) out.push({ after, retryAfter: previous.retryAfter });
  }
  return out;
}

/** The time from which every probe of one instance answered 201 (its first probe after `from` if all did). */
function servingSince(probes: readonly Probe[], from: number): number {
  let since = Infinity;
  for (const p of probes) {
    if (p.at < from) continue;
    if (p.status === 201) since = Math.min(since, p.at);
    else since = Infinity;
  }
  return since;
}

async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await sleep(100);
  }
}
