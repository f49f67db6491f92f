import { isUtf8 } from "node:buffer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { mintToken, requestTicket, startGateway, TestClient, ticketFor, type TestGateway } from "../support/gateway.js";

let redis: RedisServerHandle;
let gw: TestGateway;
beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url, HEARTBEAT_INTERVAL_MS: "100" } });
});
afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

async function connected(sub: string, options = {}) {
  const client = await TestClient.connect(gw, await ticketFor(gw, sub), options);
  await client.waitForType("connection_established");
  return client;
}

describe("connection_established", () => {
  it("is the first frame, with the user, the session end and the heartbeat interval", async () => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const { body } = await requestTicket(gw, await mintToken({ sub: "hello-user", exp }));
    const client = await TestClient.connect(gw, body.ticket as string);
    const first = await client.waitForType("connection_established");
    expect(client.frames[0]).toBe(first);
    expect(first).toMatchObject({
      user_id: "hello-user",
      session_expires_at: new Date(exp * 1000).toISOString(),
      heartbeat_interval_ms: 100,
      latest_seq: 0,
      connection_id: expect.any(String),
      epoch: expect.any(String),
    });
    client.close();
  });
});

describe("bad frames get a non-fatal error and the socket stays open", () => {
  const cases: Array<[string, string | Buffer, string]> = [
    ["malformed JSON", "{oops", "MESSAGE_MALFORMED"],
    ["invalid UTF-8", Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), "MESSAGE_MALFORMED"],
    ["a JSON array", "[1,2]", "MESSAGE_INVALID"],
    ["a frame without type", '{"id":1}', "MESSAGE_INVALID"],
    ["a chat_message without text", '{"type":"chat_message","message_id":"m","thread_id":"t"}', "MESSAGE_INVALID"],
    ["a resume with a negative last_seq", '{"type":"resume","last_seq":-1}', "MESSAGE_INVALID"],
    ["an unknown type", '{"type":"subscribe","channel":"x"}', "UNKNOWN_TYPE"],
  ];
  for (const [name, frame, code] of cases) {
    it(`answers ${name} with ${code} (fatal: false) and still answers ping`, async () => {
      const client = await connected(`bad-frames-${code}`);
      if (Buffer.isBuffer(frame)) {
        expect(isUtf8(frame)).toBe(false);
        client.socket.send(frame, { binary: false });
      } else client.send(frame);
      const error = await client.waitForType("error");
      expect(error).toMatchObject({ code, fatal: false });
      expect(error).not.toHaveProperty("retry");
      client.send({ type: "ping", id: "still-there" });
      expect(await client.waitForType("pong")).toEqual({ type: "pong", id: "still-there" });
      client.close();
    });
  }
});

describe("ping and heartbeats", () => {
  it("answers the app-level ping with pong, echoing the id", async () => {
    const client = await connected("pinger");
    client.send({ type: "ping" });
    expect(await client.waitForType("pong")).toEqual({ type: "pong" });
    const from = client.frames.length;
    client.send({ type: "ping", id: 7 });
    // The next pong after this ping, whatever it carries: a pong without the id (or with another) fails here.
    expect(await client.waitForType("pong", { from })).toEqual({ type: "pong", id: 7 });
    client.close();
  });

  it("keeps a peer that answers protocol pings", async () => {
    const client = await connected("healthy-peer");
    let pings = 0;
    client.socket.on("ping", () => pings++);
    await new Promise((r) => setTimeout(r, 500));
    expect(pings).toBeGreaterThanOrEqual(3);
    expect(client.socket.readyState).toBe(client.socket.OPEN);
    client.close();
  });

  it("terminates a peer that misses two pongs and counts it", async () => {
    const before = (await gw.app.metrics.heartbeatTimeouts.get()).values[0]?.value ?? 0;
    const client = await connected("silent-peer", { autoPong: false });
    const { code } = await client.closed;
    expect(code).toBe(1006);
    const after = (await gw.app.metrics.heartbeatTimeouts.get()).values[0]?.value ?? 0;
    expect(after).toBe(before + 1);
  });
});

describe("session refresh", () => {
  it("extends the session with refresh_session and a fresh token of the same user", async () => {
    const exp = Math.floor(Date.now() / 1000) + 61;
    const { body } = await requestTicket(gw, await mintToken({ sub: "refresher", exp }));
    const client = await TestClient.connect(gw, body.ticket as string);
    await client.waitForType("session_expiring", { timeoutMs: 5000 });
    const newExp = Math.floor(Date.now() / 1000) + 3600;
    client.send({ type: "refresh_session", token: await mintToken({ sub: "refresher", exp: newExp }) });
    const refreshed = await client.waitForType("session_refreshed");
    expect(refreshed.session_expires_at).toBe(new Date(newExp * 1000).toISOString());
    client.close();
  });

  it("answers a token of another user with a non-fatal TOKEN_INVALID and keeps the session", async () => {
    const client = await connected("owner");
    client.send({ type: "refresh_session", token: await mintToken({ sub: "someone-else" }) });
    expect(await client.waitForType("error")).toMatchObject({ code: "TOKEN_INVALID", fatal: false });
    client.send({ type: "refresh_session", token: "not-a-jwt" });
    await client.waitFor((f) => f.type === "error" && f.code === "TOKEN_INVALID", { from: client.frames.length });
    client.send({ type: "refresh_session", token: await mintToken({ sub: "owner", expiresInSeconds: -60 }) });
    await client.waitFor((f) => f.type === "error" && f.code === "TOKEN_INVALID", { from: client.frames.length });
    expect(client.socket.readyState).toBe(client.socket.OPEN);
    client.close();
  });

  it("ends the session at the refreshed exp, not the old one", async () => {
    const exp = Math.floor(Date.now() / 1000) + 1;
    const { body } = await requestTicket(gw, await mintToken({ sub: "short-refresh", exp }));
    const client = await TestClient.connect(gw, body.ticket as string);
    await client.waitForType("session_expiring");
    client.send({ type: "refresh_session", token: await mintToken({ sub: "short-refresh", exp: exp + 2 }) });
    await client.waitForType("session_refreshed");
    const { code } = await client.closed;
    expect(code).toBe(4408);
    expect(Date.now()).toBeGreaterThanOrEqual((exp + 2) * 1000);
  });
});
