import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../service/src/logger.js";
import { LogCapture } from "../support/gateway.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import {
  mintToken,
  ORIGIN,
  publishEvent,
  requestTicket,
  startGateway,
  TEST_JWT_KEY,
  TEST_PREVIOUS_JWT_KEY,
  TEST_SERVICE_SECRET,
  TestClient,
  type TestGateway,
} from "../support/gateway.js";

/**
 * docs/protocol.md §6: "Tickets, tokens and secrets never appear in any log
 * line: the `ticket` query parameter is redacted from every logged URL."
 * A real gateway logs at debug level into a LogCapture while the test drives
 * every path that handles a credential; then the whole capture is searched.
 * Each search is paired with a check that the path did log something, so a
 * test cannot pass because nothing was written.
 */

let redis: RedisServerHandle;
let gw: TestGateway;
/** Every credential the session below handled. */
const credentials: Record<string, string> = {};
/** Parts of credentials that must not leak either (a JWT's signature, a ticket's random part). */
const fragments: Record<string, string> = {};

const WRONG_SECRET = "wrong-service-secret-0123456789abcdef0123456";
const STRANGER_KEY = "a-key-the-gateway-does-not-know-0123456789";

beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url } });

  // Issuance, then a WebSocket connection with the ticket.
  const jwt = await mintToken({ sub: "log-user" });
  const issued = await requestTicket(gw, jwt);
  expect(issued.status).toBe(201);
  const ticket = issued.body.ticket as string;
  credentials.jwt = jwt;
  credentials.ticket = ticket;
  fragments["jwt signature"] = jwt.split(".")[2] as string;
  fragments["ticket random part"] = ticket.split(".")[0] as string;

  const client = await TestClient.connect(gw, ticket);
  await client.waitForType("connection_established");
  // The same ticket again: refused as TICKET_USED, a path that logs the refusal.
  const reused = new TestClient(`${gw.wsUrl}/ws?ticket=${encodeURIComponent(ticket)}`);
  expect((await reused.closed).code).toBe(4401);
  // refresh_session carries a token inside a frame.
  const fresh = await mintToken({ sub: "log-user", expiresInSeconds: 7200 });
  credentials["refresh token"] = fresh;
  client.send({ type: "refresh_session", token: fresh });
  await client.waitForType("session_refreshed");
  const foreign = await mintToken({ sub: "someone-else" });
  credentials["foreign refresh token"] = foreign;
  client.send({ type: "refresh_session", token: foreign });
  await client.waitFor((f) => f.type === "error" && f.code === "TOKEN_INVALID");
  client.close();
  await client.closed;

  // A bad token, an expired one, and a token in a query string.
  const bad = await mintToken({ sub: "log-user" }, STRANGER_KEY);
  credentials["bad token"] = bad;
  expect((await requestTicket(gw, bad)).status).toBe(401);
  const expired = await mintToken({ sub: "log-user", exp: Math.floor(Date.now() / 1000) - 60 });
  credentials["expired token"] = expired;
  expect((await requestTicket(gw, expired)).status).toBe(401);
  const inQuery = await mintToken({ sub: "query-user" });
  credentials["token in a query string"] = inQuery;
  await fetch(`${gw.url}/api/v1/auth/websocket_ticket?token=${inQuery}&access_token=${inQuery}`, { method: "POST", headers: { origin: ORIGIN } });
  // A plain GET of /ws with a ticket (426), logged as an HTTP request.
  const getTicket = `${"G".repeat(43)}.${Date.now().toString(36)}`;
  credentials["ticket on a plain GET"] = getTicket;
  expect((await fetch(`${gw.url}/ws?ticket=${getTicket}`)).status).toBe(426);
  // The same with the parameter's name percent-encoded: the query parser decodes it to `ticket`.
  const encodedName = `${"E".repeat(43)}.${Date.now().toString(36)}`;
  credentials["ticket under an encoded name"] = encodedName;
  expect((await fetch(`${gw.url}/ws?%74icket=${encodedName}`)).status).toBe(426);

  // The internal API: a wrong secret, then the right one.
  credentials["wrong service secret"] = WRONG_SECRET;
  const refused = await fetch(`${gw.url}/internal/v1/users/log-user/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${WRONG_SECRET}`, "x-service-id": "log-test-agent", "content-type": "application/json" },
    body: JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", data: {} }),
  });
  expect(refused.status).toBe(401);
  expect((await publishEvent(gw, "log-user")).status).toBe(202);

  credentials["JWT key"] = TEST_JWT_KEY;
  credentials["previous JWT key"] = TEST_PREVIOUS_JWT_KEY;
  credentials["service secret"] = TEST_SERVICE_SECRET;
});

afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

describe("the captured log", () => {
  it("is JSON lines with Cloud Logging's severity, and covers every path driven", () => {
    const records = gw.logs.records;
    expect(records.length).toBeGreaterThan(5);
    for (const record of records) expect(record.severity).toMatch(/^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$/);
    const events = new Set(records.map((r) => r.event));
    for (const event of ["http_request", "ticket_issued", "ws_auth", "ws_close", "internal_auth_failed", "event_published"]) {
      expect(events, event).toContain(event);
    }
  });

  it("never contains a ticket, a JWT, the service secret or a JWT key", () => {
    const text = gw.logs.text;
    for (const [what, value] of Object.entries(credentials)) expect(text.includes(value), what).toBe(false);
    for (const [what, value] of Object.entries(fragments)) expect(text.includes(value), what).toBe(false);
  });

  it("logs every authentication outcome as one ws_auth line with outcome and reason", () => {
    const auth = gw.logs.records.filter((r) => r.event === "ws_auth");
    expect(auth.map((r) => [r.outcome, r.reason])).toEqual([
      ["accepted", "OK"],
      ["rejected", "TICKET_USED"],
    ]);
  });

  it("logs a refused internal call with its service id, and without the secret it presented", () => {
    const refused = gw.logs.records.filter((r) => r.event === "internal_auth_failed");
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ service_id: "log-test-agent", has_bearer: true });
  });

  it("logs a request by its route's pattern, without the query string", () => {
    const urls = gw.logs.records.filter((r) => typeof r.url === "string").map((r) => r.url as string);
    expect(urls).toContain("/ws");
    expect(urls).toContain("/api/v1/auth/websocket_ticket");
    for (const url of urls) expect(url).not.toMatch(/[?#]/);
  });

  // The access line is written in an onResponse hook, which never runs for a
  // WebSocket upgrade: the ws_auth line names no URL at all (the route is /ws).
  it("logs WebSocket upgrades without their URL", () => {
    const auths = gw.logs.records.filter((r) => r.event === "ws_auth");
    expect(auths.length).toBeGreaterThanOrEqual(2);
    for (const line of auths) expect(line).not.toHaveProperty("url");
  });
});

describe("the logger itself", () => {
  it("censors credential fields wherever they are nested", () => {
    const capture = new LogCapture();
    const logger = createLogger({ level: "info", destination: capture });
    logger.info({ req: { headers: { authorization: "Bearer abc.def.ghi", cookie: "session=s3cr3t" } }, data: { token: "tok-123", ticket: "tkt-456", password: "pw-789", secret: "sec-000" } }, "x");
    const text = capture.text;
    for (const value of ["abc.def.ghi", "s3cr3t", "tok-123", "tkt-456", "pw-789", "sec-000"]) expect(text).not.toContain(value);
    expect(text).toContain("[REDACTED]");
  });
});
