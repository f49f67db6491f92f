import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HTTP_TIMEOUTS } from "../../service/src/httpGuards.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { mintToken, ORIGIN, publishEvent, startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";
import { rawPeer, upgradeRequest } from "../support/raw-ws.js";

// Issue 13, items 3, 4, 6, 7 and Node's own error answers, each written as
// the attack, against a real gateway on a real Redis.
let redis: RedisServerHandle;
let gw: TestGateway;
let slow: TestGateway;
const SECRET = "s3cr3t-credential-value-0123456789";
beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url } });
  // The same timeouts, shortened, so that a test need not wait 15 s.
  slow = await startGateway({ env: { REDIS_URL: redis.url }, httpTimeouts: { headersTimeoutMs: 800, requestTimeoutMs: 1000, checkIntervalMs: 200 } });
});
afterAll(async () => {
  await gw?.close();
  await slow?.close();
  await redis?.stop();
});

/** Sends `head` and then `body` one byte at a time every `everyMs`; resolves with what the server answered and when. */
function trickle(url: string, head: string, body: string, everyMs: number): Promise<{ answer: string; afterMs: number }> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  const started = Date.now();
  let answer = "";
  socket.on("error", () => undefined);
  socket.on("data", (d) => (answer += d.toString()));
  socket.write(head);
  let i = 0;
  const timer = setInterval(() => {
    if (i < body.length && socket.writable) socket.write(body[i++]!);
  }, everyMs);
  return new Promise((resolve) =>
    socket.once("close", () => {
      clearInterval(timer);
      resolve({ answer, afterMs: Date.now() - started });
    }),
  );
}

describe("item 3: a request that trickles in is not held forever", () => {
  it("sets bounded request timeouts on the public listener", () => {
    expect(gw.app.server.requestTimeout).toBe(HTTP_TIMEOUTS.requestTimeoutMs);
    expect(gw.app.server.headersTimeout).toBe(HTTP_TIMEOUTS.headersTimeoutMs);
    expect(gw.app.server.keepAliveTimeout).toBeGreaterThan(600_000);
  });

  it("answers a ticket request whose body trickles in with 408 in the error shape, and closes it", async () => {
    const token = await mintToken({ sub: "trickler" });
    const head = `POST /api/v1/auth/websocket_ticket HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n`;
    const { answer, afterMs } = await trickle(slow.url, head, "{".padEnd(40, " "), 300);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toEqual({ error: { code: "REQUEST_TIMEOUT", message: expect.any(String) } });
    expect(afterMs).toBeLessThan(8000);
  });

  it("answers headers that trickle in with 408 too", async () => {
    const { answer } = await trickle(slow.url, "GET /healthz HTTP/1.1\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 300);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
  });

  it("keeps a WebSocket open well past the request timeout", async () => {
    const client = await TestClient.connect(slow, await ticketFor(slow, "long-lived"));
    await client.waitForType("connection_established");
    await new Promise((r) => setTimeout(r, 2500));
    await publishEvent(slow, "long-lived");
    await client.waitFor((f) => f.seq === 1);
    client.close();
  });
});

describe("Node's own parser errors use the error shape", () => {
  it("answers a request line that is not HTTP with 400 BAD_REQUEST as JSON", async () => {
    const { answer } = await trickle(gw.url, "NOT HTTP AT ALL\r\n\r\n", "", 1000);
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toEqual({ error: { code: "BAD_REQUEST", message: expect.any(String) } });
  });

  it("answers headers over Node's limit with 431 HEADERS_TOO_LARGE as JSON", async () => {
    const { answer } = await trickle(gw.url, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`, "", 1000);
    expect(answer).toMatch(/^HTTP\/1\.1 431/);
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.code).toBe("HEADERS_TOO_LARGE");
  });
});

describe("item 4: only /ws upgrades", () => {
  for (const path of ["/healthz", "/readyz", `/healthz?ticket=${SECRET}`, `/ws/${SECRET}`, "/nowhere"]) {
    it(`refuses an upgrade of GET ${path.replace(SECRET, "<secret>")} in the HTTP answer, and lets go of the socket`, async () => {
      const peer = rawPeer(gw.url, upgradeRequest("x", path, { Origin: ORIGIN }));
      const { status, body } = await peer.response;
      expect(status).not.toBe(101);
      expect([400, 404]).toContain(status);
      expect(JSON.parse(body)).toEqual({ error: { code: expect.stringMatching(/^(BAD_REQUEST|NOT_FOUND)$/), message: expect.any(String) } });
      // The peer ignores every close; the gateway ends the connection itself.
      expect(await peer.ended).toBeLessThan(2000);
    });
  }

  it("still upgrades /ws", async () => {
    const peer = rawPeer(gw.url, upgradeRequest("x", "/ws", { Origin: ORIGIN }));
    expect((await peer.response).status).toBe(101);
    peer.socket.destroy();
  });
});

describe("item 6: credentials under any name never reach a log", () => {
  it("logs neither the query string nor the path a client chose, at any level", async () => {
    const token = await mintToken({ sub: "log-user" });
    const attempts = [
      `/ws?id_token=${SECRET}`,
      `/ws?auth=${SECRET}`,
      `/ws?authorization=${SECRET}`,
      `/ws?ticket[]=${SECRET}`,
      `/ws?ticket%5B%5D=${SECRET}`,
      `/ws/${SECRET}`,
      `/api/v1/auth/websocket_ticket?id_token=${SECRET}`,
      `/api/${SECRET}`,
      `/internal/v1/users/u/events?key=${SECRET}`,
    ];
    await Promise.all(
      attempts.map(async (path) => {
        await fetch(`${gw.url}${path}`, { method: path.startsWith("/api") ? "POST" : "GET", headers: { authorization: `Bearer ${token}` } });
        await rawPeer(gw.url, upgradeRequest("x", path)).ended;
      }),
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(gw.logs.lines.length).toBeGreaterThan(attempts.length);
    expect(gw.logs.text).not.toContain(SECRET);
    expect(gw.logs.text).not.toContain(token);
    // What is logged is the route's pattern.
    const urls = new Set(gw.logs.records.filter((r) => r.event === "http_request").map((r) => r.url));
    expect(urls).toContain("/ws");
    expect(urls).toContain("(no route)");
  });
});

describe("item 7: the /api/ origin rule is decided on the routed path", () => {
  for (const path of ["/%61pi/v1/auth/websocket_ticket", "/api/v1/auth/%77ebsocket_ticket", "/%61%70%69/v1/auth/websocket_ticket"]) {
    it(`refuses POST ${path} from a forbidden origin with 403`, async () => {
      const token = await mintToken({ sub: "spelling" });
      const res = await fetch(`${gw.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${token}`, origin: "https://evil.example" } });
      const body = (await res.json()) as { error?: { code: string } };
      // Either the router does not take the spelling at all (404) or it routes it and the origin rule holds (403): never a ticket.
      expect(res.status === 403 ? body.error?.code : res.status).toBe(res.status === 403 ? "ORIGIN_FORBIDDEN" : 404);
    });
  }

  it("routes the %61pi spelling (so the check matters) and refuses it", async () => {
    const token = await mintToken({ sub: "spelling" });
    const allowed = await fetch(`${gw.url}/%61pi/v1/auth/websocket_ticket`, { method: "POST", headers: { authorization: `Bearer ${token}`, origin: ORIGIN } });
    expect(allowed.status).toBe(201);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    const forbidden = await fetch(`${gw.url}/%61pi/v1/auth/websocket_ticket`, { method: "POST", headers: { authorization: `Bearer ${token}`, origin: "https://evil.example" } });
    expect(forbidden.status).toBe(403);
  });
});

// Drill 4 found it (a 3 MB batch, now and then): the gateway answered 413 and
// closed at once, with most of the body still unread, so the peer's kernel got
// a reset and the answer was lost with it. A body somewhat over the limit is
// read and dropped, so that the 413 arrives (lingering close).
describe("a body over the route's limit: the 413 arrives", () => {
  /**
   * Sends the head and a first part of the body, reads nothing for a moment
   * (the server answers meanwhile), sends the rest, then reads: the order in
   * which a real sender meets the reset. Resolves with the status line, or the socket error.
   */
  async function post(path: string, headers: Record<string, string>, body: Buffer): Promise<string> {
    const { hostname, port } = new URL(gw.url);
    const socket = connect(Number(port), hostname);
    let answer = "";
    const done = new Promise<string>((resolve) => {
      socket.once("error", (err) => resolve(answer.split("\r\n")[0] || `socket error ${(err as NodeJS.ErrnoException).code}`));
      socket.once("close", () => resolve(answer.split("\r\n")[0] ?? ""));
      socket.on("data", (d) => {
        answer += d.toString();
        if (answer.includes("\r\n\r\n") && answer.includes("}")) socket.end();
      });
    });
    socket.pause();
    const head = `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;
    socket.write(head);
    socket.write(body.subarray(0, 64 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.write(body.subarray(64 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.resume();
    return done;
  }

  it("a 3 MB batch to a 2 MiB route, sent while the gateway has already answered: 413 BODY_TOO_LARGE", async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, "x");
    const headers = { "Content-Type": "application/json", Authorization: `Bearer ${gw.config.serviceSecret}`, "X-Service-Id": "agents" };
    const answers = await Promise.all(Array.from({ length: 5 }, () => post("/internal/v1/events", headers, body)));
    expect(answers).toEqual(Array(5).fill("HTTP/1.1 413 Payload Too Large"));
  });
});
