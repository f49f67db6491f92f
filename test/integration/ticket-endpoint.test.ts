import { Redis } from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { hashTicket } from "../../service/src/auth/tickets.js";
import { startRedis, type RedisServerHandle } from "../support/redis-server.js";
import { mintToken, ORIGIN, requestTicket, startGateway, type TestGateway } from "../support/gateway.js";

/**
 * POST /api/v1/auth/websocket_ticket (docs/protocol.md §2, §8.3) over real
 * HTTP against real gateways and a real Redis, with real JWTs.
 */

const PATH = "/api/v1/auth/websocket_ticket";
const EVIL_ORIGIN = "https://evil.example.test";

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

/** A POST to the ticket endpoint with full control over headers and body. */
async function post(gw: { url: string }, init: { token?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const res = await fetch(`${gw.url}${PATH}`, {
    method: "POST",
    headers: { ...(init.token ? { authorization: `Bearer ${init.token}` } : {}), ...init.headers },
    body: init.body,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

function expectError(answer: { status: number; body: Record<string, unknown> }, status: number, code: string): void {
  expect(answer.status, JSON.stringify(answer.body)).toBe(status);
  expect(Object.keys(answer.body)).toEqual(["error"]);
  const error = answer.body.error as Record<string, unknown>;
  expect(error.code).toBe(code);
  expect(typeof error.message).toBe("string");
  expect((error.message as string).length).toBeGreaterThan(0);
}

async function healthz(gw: { url: string }): Promise<number> {
  return (await fetch(`${gw.url}/healthz`)).status;
}

/** Polls until a ticket is issued again (after an outage), or fails after `ms`. */
async function untilTicketIssued(gw: TestGateway, sub: string, ms = 10_000): Promise<Answer> {
  const deadline = Date.now() + ms;
  let last: Answer | undefined;
  while (Date.now() < deadline) {
    last = await requestTicket(gw, await mintToken({ sub }));
    if (last.status === 201) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no ticket within ${ms} ms; last answer ${last?.status} ${JSON.stringify(last?.body)}`);
}

let redis: RedisServerHandle;
let gw: TestGateway;
let raw: Redis;

beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ env: { REDIS_URL: redis.url } });
  raw = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await raw.connect();
});
afterAll(async () => {
  await raw?.quit();
  await gw?.close();
  await redis?.stop();
});

describe("issuing", () => {
  it("answers 201 with a URL-safe ticket of at least 256 random bits, expires_in 30 and an ISO expires_at", async () => {
    const before = Date.now();
    const { status, body, headers } = await requestTicket(gw, await mintToken({ sub: "shape-user" }));
    expect(status).toBe(201);
    expect(Object.keys(body).sort()).toEqual(["expires_at", "expires_in", "ticket"]);
    const ticket = body.ticket as string;
    expect(ticket).toMatch(/^[A-Za-z0-9._~-]+$/);
    expect(encodeURIComponent(ticket)).toBe(ticket);
    // `<random, base64url>.<expiry>`: the random part alone carries at least 256 bits.
    const random = ticket.split(".")[0] as string;
    expect(random).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(random.length * 6).toBeGreaterThanOrEqual(256);
    expect(Buffer.from(random, "base64url").length).toBeGreaterThanOrEqual(32);
    expect(body.expires_in).toBe(30);
    const expiresAt = body.expires_at as string;
    expect(expiresAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(new Date(expiresAt).toISOString()).toBe(expiresAt);
    expect(Date.parse(expiresAt)).toBeGreaterThanOrEqual(before + 30_000 - 1000);
    expect(Date.parse(expiresAt)).toBeLessThanOrEqual(Date.now() + 30_000 + 1000);
    expect(headers.get("content-type")).toMatch(/^application\/json/);
  });

  it("answers with Cache-Control: no-store", async () => {
    const { status, headers } = await requestTicket(gw, await mintToken({ sub: "cache-user" }));
    expect(status).toBe(201);
    expect(headers.get("cache-control")).toBe("no-store");
  });

  it("never issues the same ticket twice, and the random parts share no structure", async () => {
    const tickets = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const { status, body } = await requestTicket(gw, await mintToken({ sub: `unique-${i % 10}` }));
        expect(status).toBe(201);
        return body.ticket as string;
      }),
    );
    expect(new Set(tickets).size).toBe(tickets.length);
    const randoms = tickets.map((t) => t.split(".")[0] as string);
    expect(new Set(randoms.map((r) => r.slice(0, 8))).size).toBe(randoms.length);
    // Roughly uniform characters: all 64 base64url symbols show up in 40 × 43 characters.
    expect(new Set(randoms.join("")).size).toBeGreaterThan(60);
  });

  it("TICKET_TTL_SECONDS sets expires_in and expires_at", async () => {
    const short = await startGateway({ env: { REDIS_URL: redis.url, TICKET_TTL_SECONDS: "5" } });
    try {
      const { status, body } = await requestTicket(short, await mintToken({ sub: "ttl-user" }));
      expect(status).toBe(201);
      expect(body.expires_in).toBe(5);
      expect(Date.parse(body.expires_at as string) - Date.now()).toBeLessThanOrEqual(5000);
    } finally {
      await short.close();
    }
  });

  it("an allowed Origin is echoed in Access-Control-Allow-Origin, with Vary: Origin, and Retry-After is exposed to the page", async () => {
    const { status, headers } = await requestTicket(gw, await mintToken({ sub: "cors-user" }), { origin: ORIGIN });
    expect(status).toBe(201);
    expect(headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(headers.get("vary")).toMatch(/origin/i);
    expect(headers.get("access-control-expose-headers")).toBe("retry-after");
  });

  it("a request without Origin (not a browser) gets a ticket too", async () => {
    const { status, headers } = await requestTicket(gw, await mintToken({ sub: "server-side" }), {});
    expect(status).toBe(201);
    expect(headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("errors (§2 table)", () => {
  it("no bearer token: 401 TOKEN_MISSING with WWW-Authenticate: Bearer and no error attribute", async () => {
    const variants: Array<Record<string, string>> = [{ origin: ORIGIN }, { origin: ORIGIN, authorization: "Basic dXNlcjpwYXNz" }, { origin: ORIGIN, authorization: "Bearer " }];
    for (const headers of variants) {
      const answer = await post(gw, { headers });
      expectError(answer, 401, "TOKEN_MISSING");
      expect(answer.headers.get("www-authenticate")).toBe("Bearer");
    }
  });

  it("a token with a bad signature, claims, algorithm or shape: 401 TOKEN_INVALID with error=\"invalid_token\"", async () => {
    const noneToken = `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${Buffer.from(JSON.stringify({ sub: "x", exp: 4_000_000_000 })).toString("base64url")}.`;
    const tokens = [
      await mintToken({ sub: "user-1" }, "a-key-the-gateway-does-not-know-0123456789"),
      await mintToken({ sub: "" }),
      noneToken,
      "not-a-jwt",
    ];
    for (const token of tokens) {
      const answer = await post(gw, { token, headers: { origin: ORIGIN } });
      expectError(answer, 401, "TOKEN_INVALID");
      expect(answer.headers.get("www-authenticate")).toBe('Bearer error="invalid_token"');
    }
  });

  it("an expired token: 401 TOKEN_EXPIRED with error=\"invalid_token\"", async () => {
    const answer = await post(gw, { token: await mintToken({ exp: Math.floor(Date.now() / 1000) - 60 }), headers: { origin: ORIGIN } });
    expectError(answer, 401, "TOKEN_EXPIRED");
    expect(answer.headers.get("www-authenticate")).toBe('Bearer error="invalid_token"');
  });

  it("an Origin not in ALLOWED_ORIGINS: 403 ORIGIN_FORBIDDEN, without CORS headers, even with a valid token", async () => {
    for (const origin of [EVIL_ORIGIN, "null", `${ORIGIN}.evil.test`, ORIGIN.replace("https", "http")]) {
      const answer = await post(gw, { token: await mintToken({ sub: "origin-user" }), headers: { origin } });
      expectError(answer, 403, "ORIGIN_FORBIDDEN");
      expect(answer.headers.get("access-control-allow-origin")).toBeNull();
    }
  });

  it("a wrong method on the endpoint is 404 NOT_FOUND in the same error shape", async () => {
    const res = await fetch(`${gw.url}${PATH}`, { headers: { authorization: `Bearer ${await mintToken()}` } });
    expectError({ status: res.status, body: (await res.json()) as Record<string, unknown> }, 404, "NOT_FOUND");
  });
});

describe("CORS preflight", () => {
  const preflight = (origin: string | undefined) =>
    fetch(`${gw.url}${PATH}`, {
      method: "OPTIONS",
      headers: {
        ...(origin === undefined ? {} : { origin }),
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });

  it("an allowed origin gets 204 with the allow headers", async () => {
    const res = await preflight(ORIGIN);
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(res.headers.get("access-control-allow-methods")).toMatch(/\bPOST\b/);
    const allowHeaders = (res.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    expect(allowHeaders).toContain("authorization");
    expect(allowHeaders).toContain("content-type");
    expect(res.headers.get("vary")).toMatch(/origin/i);
    expect(await res.text()).toBe("");
  });

  it("a disallowed origin gets 403 ORIGIN_FORBIDDEN and no allow headers", async () => {
    const res = await preflight(EVIL_ORIGIN);
    expectError({ status: res.status, body: (await res.json()) as Record<string, unknown> }, 403, "ORIGIN_FORBIDDEN");
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    expect(res.headers.get("access-control-allow-methods")).toBeNull();
  });

  it("an allowed origin's OPTIONS without Access-Control-Request-Method is still a 204 preflight (never a text/plain 400)", async () => {
    const res = await fetch(`${gw.url}${PATH}`, { method: "OPTIONS", headers: { origin: ORIGIN } });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(res.headers.get("access-control-max-age")).toBe("600");
  });

  it("a preflight without Origin is refused", async () => {
    const res = await preflight(undefined);
    expect(res.status).toBe(403);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });

  // @fastify/cors routes OPTIONS on every other path; a body there is parsed
  // like any other, and its refusal must be in the error shape too (drill 4 found Fastify's own).
  it("an OPTIONS with a body on any other path is answered in the error shape", async () => {
    for (const [path, type, body, status, code] of [
      ["/healthz", "text/plain", "hi", 415, "UNSUPPORTED_MEDIA_TYPE"],
      ["/internal/v1/users/u/revoke", "application/json", "{not json", 400, "BAD_REQUEST"],
    ] as const) {
      const res = await fetch(`${gw.url}${path}`, { method: "OPTIONS", headers: { "content-type": type }, body });
      expectError({ status: res.status, body: (await res.json()) as Record<string, unknown> }, status, code);
    }
  });
});

describe("rate limits, across two instances sharing one Redis", () => {
  let limitsRedis: RedisServerHandle;
  let flush: Redis;
  let userA: TestGateway;
  let userB: TestGateway;
  let ipA: TestGateway;
  let ipB: TestGateway;

  beforeAll(async () => {
    limitsRedis = await startRedis();
    flush = new Redis(limitsRedis.url, { maxRetriesPerRequest: 1 });
    [userA, userB, ipA, ipB] = await Promise.all([
      startGateway({ env: { REDIS_URL: limitsRedis.url, TICKET_RATE_PER_USER: "3" } }),
      startGateway({ env: { REDIS_URL: limitsRedis.url, TICKET_RATE_PER_USER: "3" } }),
      startGateway({ env: { REDIS_URL: limitsRedis.url, TICKET_RATE_PER_IP: "4" } }),
      startGateway({ env: { REDIS_URL: limitsRedis.url, TICKET_RATE_PER_IP: "4" } }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([userA, userB, ipA, ipB].map((g) => g?.close()));
    await flush?.quit();
    await limitsRedis?.stop();
  });
  beforeEach(async () => {
    await flush.flushall();
  });

  function expectRateLimited(answer: Answer): void {
    expectError(answer, 429, "RATE_LIMITED");
    const retryAfter = Number(answer.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
  }

  it("the per-user limit counts the user's tickets on every instance", async () => {
    const token = await mintToken({ sub: "busy-user" });
    expect((await requestTicket(userA, token)).status).toBe(201);
    expect((await requestTicket(userB, token)).status).toBe(201);
    expect((await requestTicket(userA, token)).status).toBe(201);
    expectRateLimited(await post(userB, { token, headers: { origin: ORIGIN } }));
    expectRateLimited(await post(userA, { token, headers: { origin: ORIGIN } }));
    // Another user is not limited by this one.
    expect((await requestTicket(userB, await mintToken({ sub: "calm-user" }))).status).toBe(201);
  });

  it("the per-user limit holds when the requests race on both instances", async () => {
    const token = await mintToken({ sub: "racing-user" });
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => requestTicket(i % 2 ? userA : userB, token)));
    expect(answers.filter((a) => a.status === 201)).toHaveLength(3);
    expect(answers.filter((a) => a.status === 429)).toHaveLength(9);
  });

  it("the per-IP limit counts every request from the address on every instance", async () => {
    for (let i = 0; i < 4; i++) expect((await requestTicket(i % 2 ? ipA : ipB, await mintToken({ sub: `ip-user-${i}` }))).status).toBe(201);
    expectRateLimited(await post(ipA, { token: await mintToken({ sub: "ip-user-new" }), headers: { origin: ORIGIN } }));
    expectRateLimited(await post(ipB, { token: await mintToken({ sub: "ip-user-other" }), headers: { origin: ORIGIN } }));
  });

  it("requests with bad tokens count against the per-IP limit too", async () => {
    for (let i = 0; i < 4; i++) {
      expectError(await post(i % 2 ? ipA : ipB, { token: "garbage", headers: { origin: ORIGIN } }), 401, "TOKEN_INVALID");
    }
    expectRateLimited(await post(ipA, { token: await mintToken({ sub: "innocent" }), headers: { origin: ORIGIN } }));
  });

  it("with TRUST_PROXY_HOPS=0 a forged X-Forwarded-For does not escape the per-IP limit", async () => {
    for (let i = 0; i < 4; i++) {
      const answer = await requestTicket(ipA, await mintToken({ sub: `xff-${i}` }), { origin: ORIGIN, "x-forwarded-for": `203.0.113.${i}` });
      expect(answer.status).toBe(201);
    }
    expectRateLimited(await post(ipB, { token: await mintToken({ sub: "xff-new" }), headers: { origin: ORIGIN, "x-forwarded-for": "198.51.100.7" } }));
  });
});

describe("bad input keeps the process serving", () => {
  it("a body over 1 KiB is 413 BODY_TOO_LARGE", async () => {
    const token = await mintToken({ sub: "big-body" });
    for (const size of [2048, 1024 * 1024]) {
      const body = JSON.stringify({ pad: "x".repeat(size) });
      expectError(await post(gw, { token, headers: { origin: ORIGIN, "content-type": "application/json" }, body }), 413, "BODY_TOO_LARGE");
    }
    expect(await healthz(gw)).toBe(200);
  });

  it("a body that is not application/json is 415 UNSUPPORTED_MEDIA_TYPE", async () => {
    const token = await mintToken({ sub: "text-body" });
    for (const contentType of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
      const answer = await post(gw, { token, headers: { origin: ORIGIN, "content-type": contentType }, body: "{}" });
      expectError(answer, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    expect(await healthz(gw)).toBe(200);
  });

  it("malformed JSON is 400 BAD_REQUEST", async () => {
    const token = await mintToken({ sub: "bad-json" });
    for (const body of ["{", "{'a':1}", "not json", '{"a":}']) {
      expectError(await post(gw, { token, headers: { origin: ORIGIN, "content-type": "application/json" }, body }), 400, "BAD_REQUEST");
    }
    expect(await healthz(gw)).toBe(200);
  });

  it("an empty body, with or without Content-Type: application/json, and {} are accepted", async () => {
    const token = await mintToken({ sub: "empty-body" });
    expect((await post(gw, { token, headers: { origin: ORIGIN, "content-type": "application/json" }, body: "" })).status).toBe(201);
    expect((await post(gw, { token, headers: { origin: ORIGIN, "content-type": "application/json; charset=utf-8" }, body: "{}" })).status).toBe(201);
    expect((await post(gw, { token, headers: { origin: ORIGIN } })).status).toBe(201);
  });

  it("after all of it, tickets are still issued", async () => {
    expect(await healthz(gw)).toBe(200);
    expect((await requestTicket(gw, await mintToken({ sub: "after-bad-input" }))).status).toBe(201);
  });
});

describe("what the store holds", () => {
  /** Every key in Redis with every string it holds, whatever its type. */
  async function dump(client: Redis): Promise<Array<{ key: string; values: string[] }>> {
    const READ: Record<string, string[]> = {
      string: ["GET"],
      hash: ["HGETALL"],
      zset: ["ZRANGE", "0", "-1", "WITHSCORES"],
      set: ["SMEMBERS"],
      list: ["LRANGE", "0", "-1"],
      stream: ["XRANGE", "-", "+"],
    };
    const flatten = (reply: unknown): string[] =>
      Array.isArray(reply)
        ? reply.flatMap(flatten)
        : reply !== null && typeof reply === "object" && !Buffer.isBuffer(reply)
          ? Object.entries(reply).flatMap(flatten)
          : [String(reply)];
    const keys = await client.keys("*");
    return Promise.all(
      keys.map(async (key) => {
        const type = await client.type(key);
        const read = READ[type];
        if (read === undefined) return { key, values: [`<unread type ${type}>`] };
        const [command, ...args] = read as [string, ...string[]];
        return { key, values: flatten(await client.call(command, key, ...args)) };
      }),
    );
  }

  it("a dump of the store does not contain the ticket: it is stored by its hash", async () => {
    const token = await mintToken({ sub: "dump-user" });
    const issued: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { status, body } = await requestTicket(gw, token);
      expect(status).toBe(201);
      issued.push(body.ticket as string);
    }
    const entries = await dump(raw);
    const text = entries.map((e) => [e.key, ...e.values].join("\n")).join("\n");
    expect(entries.some((e) => e.values.some((v) => v.startsWith("<unread")))).toBe(false);
    for (const ticket of issued) {
      const random = ticket.split(".")[0] as string;
      expect(text).not.toContain(ticket);
      expect(text).not.toContain(random);
      // Nor in another common encoding of the same bytes.
      expect(text).not.toContain(Buffer.from(random, "base64url").toString("hex"));
      expect(text).not.toContain(Buffer.from(random, "base64url").toString("base64"));
      // What is there is keyed by the ticket's SHA-256.
      expect(entries.filter((e) => e.key.includes(hashTicket(ticket)))).toHaveLength(1);
    }
    expect(text).not.toContain(token);
  });

  it("the stored record binds the ticket to the token's sub and exp and to the request's Origin", async () => {
    const exp = Math.floor(Date.now() / 1000) + 1234;
    const withOrigin = await requestTicket(gw, await mintToken({ sub: "bound-user", exp }), { origin: ORIGIN });
    const withoutOrigin = await requestTicket(gw, await mintToken({ sub: "bound-user", exp }), {});
    const recordOf = async (ticket: string) => {
      const [key] = (await raw.keys("*")).filter((k) => k.includes(hashTicket(ticket)));
      expect(key).toBeDefined();
      // keys.ts admissionTicketValue: the user's key prefix and the checked fields, then the record's JSON.
      const value = (await raw.get(key as string)) ?? "";
      const [prefix, expiresAt, issuedAt, sessionExpiresAt, origin] = value.split(" ");
      const record = JSON.parse(value.split(" ").slice(5).join(" ")) as Record<string, unknown>;
      expect(prefix).toBe("gw:{u:bound-user}");
      expect([expiresAt, issuedAt, sessionExpiresAt, origin]).toEqual([record.expiresAt, record.issuedAt, record.sessionExpiresAt, record.origin ?? "-"].map(String));
      return record;
    };
    expect(await recordOf(withOrigin.body.ticket as string)).toMatchObject({ sub: "bound-user", sessionExpiresAt: exp * 1000, origin: ORIGIN });
    expect(await recordOf(withoutOrigin.body.ticket as string)).toMatchObject({ sub: "bound-user", sessionExpiresAt: exp * 1000, origin: null });
  });
});

describe("Redis outage", () => {
  let outageRedis: RedisServerHandle;
  let outage: TestGateway;

  beforeAll(async () => {
    outageRedis = await startRedis();
    outage = await startGateway({ env: { REDIS_URL: outageRedis.url } });
  });
  afterAll(async () => {
    outageRedis?.resume();
    await outage?.close();
    await outageRedis?.stop();
  });

  async function expectUnavailableFast(): Promise<void> {
    const started = Date.now();
    const answer = await post(outage, { token: await mintToken({ sub: "outage-user" }), headers: { origin: ORIGIN } });
    const elapsed = Date.now() - started;
    expectError(answer, 503, "TICKET_STORE_UNAVAILABLE");
    expect(Number(answer.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(elapsed).toBeLessThan(2000);
  }

  it("Redis killed: 503 TICKET_STORE_UNAVAILABLE with Retry-After within ~1 s; the process keeps serving; tickets again after a restart", async () => {
    expect((await requestTicket(outage, await mintToken({ sub: "outage-user" }))).status).toBe(201);
    await outageRedis.kill();
    await expectUnavailableFast();
    await expectUnavailableFast();
    expect(await healthz(outage)).toBe(200);
    await outageRedis.restart();
    await untilTicketIssued(outage, "outage-user");
  });

  it("Redis hung (SIGSTOP): 503 TICKET_STORE_UNAVAILABLE within ~1 s; the process keeps serving; tickets again once it answers", async () => {
    await untilTicketIssued(outage, "hung-user");
    outageRedis.pause();
    try {
      await expectUnavailableFast();
      await expectUnavailableFast();
      expect(await healthz(outage)).toBe(200);
    } finally {
      outageRedis.resume();
    }
    await untilTicketIssued(outage, "hung-user");
  });
});
