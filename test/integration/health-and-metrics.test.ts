import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { publishEvent, startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";
import { until } from "../support/wait.js";

/**
 * docs/protocol.md §6: /health and /healthz while the process serves, /ready
 * and /readyz while the store and the bus answer, with a public body of
 * `{"status"}` only; the per-check detail on the metrics listener and in the
 * log line of each change; Prometheus metrics on their own listener and never
 * on the public port.
 */

const METRIC_NAMES = [
  "gateway_tickets_issued_total",
  "gateway_ws_auth_total",
  "gateway_ws_connections",
  "gateway_ws_closes_total",
  "gateway_ticket_redeem_seconds",
  "gateway_events_published_total",
  "gateway_events_delivered_total",
  "gateway_resume_total",
  "gateway_bus_lag_seconds",
];

async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown>; ms: number }> {
  const started = Date.now();
  const res = await fetch(url);
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, ms: Date.now() - started };
}

/** Polls `probe` until `ok` holds for its answer; on timeout the error shows the last answer seen. */
async function untilProbe<T>(what: string, probe: () => Promise<T>, ok: (value: T) => boolean, ms = 10_000): Promise<T> {
  let last: T | undefined;
  const check = async () => ((last = await probe()), ok(last) ? last : undefined);
  return until(what, check, ms, 100).catch((err: Error) => {
    throw new Error(`${err.message}; last: ${JSON.stringify(last)}`);
  });
}

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("health", () => {
  let redis: RedisServerHandle;
  let gw: TestGateway;

  let detailUrl: string;

  beforeAll(async () => {
    redis = await startRedis();
    gw = await startGateway({ env: { REDIS_URL: redis.url }, metrics: true });
    detailUrl = `http://127.0.0.1:${gw.app.metricsPort()}/readyz`;
  });
  afterAll(async () => {
    redis?.resume();
    await gw?.close();
    await redis?.stop();
  });

  for (const path of ["/health", "/healthz"]) {
    it(`${path} is 200 while the process serves`, async () => {
      const { status, body } = await getJson(`${gw.url}${path}`);
      expect(status).toBe(200);
      expect(body).toEqual({ status: "ok" });
    });
  }

  for (const path of ["/ready", "/readyz"]) {
    it(`${path} is 200 {"status":"ok"} when the store and the bus answer, with no per-check detail`, async () => {
      const { status, body } = await untilProbe("ready", () => getJson(`${gw.url}${path}`), (r) => r.status === 200);
      expect(status).toBe(200);
      expect(body).toEqual({ status: "ok" });
    });
  }

  it("the metrics port's /readyz gives the per-check detail, the JWKS's state included", async () => {
    const { status, body } = await untilProbe("ready", () => getJson(detailUrl), (r) => r.status === 200);
    expect(status).toBe(200);
    expect(body).toEqual({ status: "ok", checks: { secrets: "ok", store: "ok", bus: "ok", jwks: "unused" } });
  });

  it("with Redis down, the public /ready and /readyz say only 503 degraded, the metrics port says which check failed, and one log line says why", async () => {
    await untilProbe("ready", () => getJson(`${gw.url}/ready`), (r) => r.status === 200);
    const linesBefore = gw.logs.records.filter((r) => r.event === "readiness_changed").length;
    await redis.kill();
    for (const path of ["/ready", "/readyz"]) {
      const down = await getJson(`${gw.url}${path}`);
      expect(down.status).toBe(503);
      expect(down.body).toEqual({ status: "degraded" });
      expect(down.ms).toBeLessThan(2000);
    }
    const detail = await getJson(detailUrl);
    expect(detail.status).toBe(503);
    expect(detail.body).toEqual({ status: "degraded", checks: { secrets: "ok", store: "unreachable", bus: "unreachable", jwks: "unused" } });
    expect((await getJson(`${gw.url}/health`)).status).toBe(200);
    expect((await getJson(`${gw.url}/healthz`)).status).toBe(200);
    const changes = gw.logs.records.filter((r) => r.event === "readiness_changed").slice(linesBefore);
    expect(changes).toEqual([expect.objectContaining({ status: "degraded", previous: "ok", checks: expect.objectContaining({ store: "unreachable", bus: "unreachable" }) })]);

    await redis.restart();
    const up = await untilProbe("ready again", () => getJson(`${gw.url}/readyz`), (r) => r.status === 200);
    expect(up.body).toEqual({ status: "ok" });
    expect(gw.logs.records.filter((r) => r.event === "readiness_changed").at(-1)).toMatchObject({ status: "ok", previous: "degraded" });
  });

  it("with Redis hung, /readyz is 503 degraded within ~1 s and /healthz stays 200", async () => {
    await untilProbe("ready", () => getJson(`${gw.url}/readyz`), (r) => r.status === 200);
    redis.pause();
    try {
      const down = await getJson(`${gw.url}/readyz`);
      expect(down.status).toBe(503);
      expect(down.body).toEqual({ status: "degraded" });
      expect((await getJson(detailUrl)).body.checks).toMatchObject({ secrets: "ok", store: "unreachable" });
      expect(down.ms).toBeLessThan(2000);
      expect((await getJson(`${gw.url}/healthz`)).status).toBe(200);
    } finally {
      redis.resume();
    }
    await untilProbe("ready again", () => getJson(`${gw.url}/readyz`), (r) => r.status === 200);
  });
});

describe("metrics", () => {
  let redis: RedisServerHandle;
  let gw: TestGateway;
  let metricsUrl: string;

  beforeAll(async () => {
    redis = await startRedis();
    gw = await startGateway({ env: { REDIS_URL: redis.url }, metrics: true });
    const port = gw.app.metricsPort();
    expect(port).toBeTypeOf("number");
    metricsUrl = `http://127.0.0.1:${port}/metrics`;
  });
  afterAll(async () => {
    await gw?.close();
    await redis?.stop();
  });

  it("are served on their own port, not the public one", () => {
    expect(gw.app.metricsPort()).not.toBe(Number(new URL(gw.url).port));
  });

  it("carry every §6 metric name, in Prometheus text format", async () => {
    const res = await fetch(metricsUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    for (const name of METRIC_NAMES) expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, "m"));
  });

  it("count what happened: tickets issued, a WebSocket accepted and closed, an event published and delivered", async () => {
    const ticket = await ticketFor(gw, "metrics-user-7f3a");
    const client = await TestClient.connect(gw, ticket);
    await client.waitForType("connection_established");
    expect((await publishEvent(gw, "metrics-user-7f3a")).status).toBe(202);
    await client.waitFor((f) => f.seq === 1);
    const open = await (await fetch(metricsUrl)).text();
    expect(sample(open, "gateway_tickets_issued_total")).toBeGreaterThanOrEqual(1);
    expect(sample(open, 'gateway_ws_auth_total{outcome="accepted",reason="OK"}')).toBe(1);
    expect(sample(open, "gateway_ws_connections")).toBe(1);
    expect(sample(open, "gateway_events_published_total")).toBe(1);
    expect(sample(open, "gateway_events_delivered_total")).toBe(1);
    expect(sample(open, "gateway_ticket_redeem_seconds_count")).toBe(1);

    client.close();
    await client.closed;
    const closed = await untilProbe("the close counted", async () => (await fetch(metricsUrl)).text(), (t) => sample(t, "gateway_ws_connections") === 0);
    expect(sample(closed, 'gateway_ws_closes_total{code="1000",closed_by="client"}')).toBe(1);

    // Labels are codes and outcomes only: no user id or ticket reaches a metric.
    expect(closed).not.toContain("metrics-user-7f3a");
    expect(closed).not.toContain(ticket);
  });

  it("GET /metrics on the public port is 404", async () => {
    const res = await fetch(`${gw.url}/metrics`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: "NOT_FOUND", message: expect.any(String) } });
  });

  it("the metrics listener serves nothing else (but the readiness detail)", async () => {
    const base = metricsUrl.replace(/\/metrics$/, "");
    expect((await fetch(`${base}/healthz`)).status).toBe(404);
    expect((await fetch(`${base}/readyz`, { method: "POST" })).status).toBe(404);
    expect((await fetch(`${base}/readyz?detail=1`)).status).toBe(404);
    expect((await fetch(`${base}/api/v1/auth/websocket_ticket`, { method: "POST" })).status).toBe(404);
    expect((await fetch(metricsUrl, { method: "POST" })).status).toBe(404);
  });

  it("the public port answers no metrics path under another spelling either", async () => {
    for (const path of ["/metrics/", "/Metrics", "/metrics?x=1"]) {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(await res.text()).not.toContain("gateway_");
    }
  });
});
