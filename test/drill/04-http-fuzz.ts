/**
 * Drill 4: HTTP fuzzing of the ticket endpoint and the internal API.
 *
 * A table of deliberate cases (every claim of the user token wrong in turn,
 * garbage bodies, wrong content types, wrong methods, oversized bodies and
 * headers, bad service credentials), each with the status and error code the
 * contract gives (docs/protocol.md §1, §2, §5, §8.3); then FUZZ_CASES random
 * requests built from the same parts (seeded; replay with DRILL4_SEED).
 *
 * Pass when: every table case gets exactly its status and code; no request
 * gets a 5xx; every 4xx the app answers has the contract's error shape
 * `{"error":{"code","message"}}` with the status the error table gives the
 * code (a 401 carries WWW-Authenticate); and the process is still up.
 * Requests refused by Node's HTTP parser before the app sees them (431 for
 * oversized headers, 400 for a malformed request) are counted apart.
 */
import { createHmac } from "node:crypto";
import { SignJWT } from "jose";
import { ERRORS } from "../../service/src/errors.js";
import { HttpConn, type HttpResponse } from "../bench/lib/http.js";
import { spawnGatewayProc } from "../bench/lib/procs.js";
import { prng } from "../bench/lib/stats.js";
import { startRedis } from "../support/redis-server.js";
import { TEST_PREVIOUS_JWT_KEY } from "../support/gateway.js";
import { check, drill, ORIGIN, quick, tally, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "./lib.js";

const FUZZ_CASES = Number(process.env.DRILL4_CASES ?? (quick ? 1500 : 5000));
const SEED = Number(process.env.DRILL4_SEED ?? Date.now() % 1_000_000);
const ISSUER = "https://auth.example.test";
const AUDIENCE = "chat-gateway";
const TICKET = "/api/v1/auth/websocket_ticket";
const EVENTS = "/internal/v1/users/fuzz-user/events";
const BATCH = "/internal/v1/events";
const REVOKE = "/internal/v1/users/fuzz-user/revoke";

interface Case {
  readonly name: string;
  readonly raw: Buffer;
  /** A status, or a code (its status comes from the error table). */
  /** `parser`: refused by Node's HTTP parser (Fastify's clientErrorHandler) before routing: the status is judged, not the shape. */
  readonly want: { status: number; code?: string; parser?: boolean };
}

const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
const key = (k: string) => new TextEncoder().encode(k);
const now = () => Math.floor(Date.now() / 1000);

async function token(claims: Record<string, unknown>, options: { alg?: string; keyString?: string; header?: Record<string, unknown> } = {}): Promise<string> {
  const jwt = new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: "fuzz-user", exp: now() + 600, iat: now(), ...claims }).setProtectedHeader({ alg: options.alg ?? "HS256", ...options.header });
  return jwt.sign(key(options.keyString ?? TEST_JWT_KEY));
}

/** HS256 by hand, for headers jose refuses to sign (an unknown `crit`). */
function handSigned(header: Record<string, unknown>, claims: Record<string, unknown>): string {
  const input = `${enc(header)}.${enc({ iss: ISSUER, aud: AUDIENCE, sub: "fuzz-user", exp: now() + 600, ...claims })}`;
  return `${input}.${createHmac("sha256", TEST_JWT_KEY).update(input).digest("base64url")}`;
}

function request(method: string, path: string, headers: Record<string, string>, body?: string | Buffer): Buffer {
  const b = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body);
  let head = `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  if (body !== undefined && !Object.keys(headers).some((k) => k.toLowerCase() === "transfer-encoding")) head += `content-length: ${b.length}\r\n`;
  return Buffer.concat([Buffer.from(`${head}\r\n`), b]);
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}`, origin: ORIGIN });
const svc = { authorization: `Bearer ${TEST_SERVICE_SECRET}`, "x-service-id": "fuzz" };
const json = { "content-type": "application/json" };
const goodEvent = JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", data: {} });
const batchItem = JSON.stringify({ user_id: "fuzz-user", type: "agent_thinking", run_id: "r", thread_id: "t", data: {} });

async function cases(): Promise<Case[]> {
  const c = (name: string, raw: Buffer, want: Case["want"]): Case => ({ name, raw, want });
  const code = (code: keyof typeof ERRORS) => ({ status: (ERRORS[code] as { status?: number }).status ?? 500, code });
  const valid = await token({});
  const [, validPayload, validSig] = valid.split(".");
  const post = (t: string | undefined, extra: Record<string, string> = {}, body?: string | Buffer) =>
    request("POST", TICKET, { ...(t === undefined ? { origin: ORIGIN } : bearer(t)), ...extra }, body);
  const list: Case[] = [
    // controls: these must work
    c("valid token", post(valid), { status: 201 }),
    c("token signed with JWT_SECRET_KEY_PREVIOUS", post(await token({}, { keyString: TEST_PREVIOUS_JWT_KEY })), { status: 201 }),
    c("exp 3 s ago (inside the 5 s tolerance)", post(await token({ exp: now() - 3 })), { status: 201 }),
    c("aud as an array holding ours", post(await token({ aud: ["other", AUDIENCE] })), { status: 201 }),
    c("Content-Type application/json; charset=utf-8 with {}", post(valid, { "content-type": "application/json; charset=utf-8" }, "{}"), { status: 201 }),
    c("chunked body {}", request("POST", TICKET, { ...bearer(valid), ...json, "transfer-encoding": "chunked" }, Buffer.from("2\r\n{}\r\n0\r\n\r\n")), { status: 201 }),
    // no usable bearer
    c("no Authorization", post(undefined), code("TOKEN_MISSING")),
    c("Authorization: Basic", post(undefined, { authorization: "Basic dXNlcjpwYXNz" }), code("TOKEN_MISSING")),
    c("Authorization: Bearer (nothing)", post(undefined, { authorization: "Bearer" }), code("TOKEN_MISSING")),
    c("Authorization: Bearer a b", post(undefined, { authorization: "Bearer a b" }), code("TOKEN_MISSING")),
    // every claim wrong in turn
    c("wrong key", post(await token({}, { keyString: "another-key-0123456789abcdef0123456789abcdef" })), code("TOKEN_INVALID")),
    c("alg none", post(`${enc({ alg: "none", typ: "JWT" })}.${validPayload}.`), code("TOKEN_INVALID")),
    c("alg HS512 with our key", post(await token({}, { alg: "HS512" })), code("TOKEN_INVALID")),
    c("alg RS256 header, HMAC signature (confusion)", post(`${enc({ alg: "RS256" })}.${validPayload}.${validSig}`), code("TOKEN_INVALID")),
    c("alg ES256 header, no JWKS configured", post(`${enc({ alg: "ES256" })}.${validPayload}.${validSig}`), code("TOKEN_INVALID")),
    c("no sub", post(await token({ sub: undefined })), code("TOKEN_INVALID")),
    c("empty sub", post(await token({ sub: "" })), code("TOKEN_INVALID")),
    c("numeric sub", post(await token({ sub: 12345 })), code("TOKEN_INVALID")),
    c("sub of 300 characters", post(await token({ sub: "u".repeat(300) })), code("TOKEN_INVALID")),
    c("no exp", post(await token({ exp: undefined })), code("TOKEN_INVALID")),
    c("exp as a string", post(await token({ exp: String(now() + 600) })), code("TOKEN_INVALID")),
    c("exp a minute ago", post(await token({ exp: now() - 60 })), code("TOKEN_EXPIRED")),
    c("nbf a minute ahead", post(await token({ nbf: now() + 60 })), code("TOKEN_INVALID")),
    c("wrong iss", post(await token({ iss: "https://evil.example" })), code("TOKEN_INVALID")),
    c("no iss", post(await token({ iss: undefined })), code("TOKEN_INVALID")),
    c("wrong aud", post(await token({ aud: "someone-else" })), code("TOKEN_INVALID")),
    c("no aud", post(await token({ aud: undefined })), code("TOKEN_INVALID")),
    c("payload changed after signing", post(`${valid.split(".")[0]}.${enc({ sub: "admin", exp: now() + 600, iss: ISSUER, aud: AUDIENCE })}.${validSig}`), code("TOKEN_INVALID")),
    c("two segments", post(valid.split(".").slice(0, 2).join(".")), code("TOKEN_INVALID")),
    c("four segments", post(`${valid}.x`), code("TOKEN_INVALID")),
    c("header not JSON", post(`${Buffer.from("{nope").toString("base64url")}.${validPayload}.${validSig}`), code("TOKEN_INVALID")),
    c("payload not JSON", post(`${valid.split(".")[0]}.${Buffer.from("[1,").toString("base64url")}.${validSig}`), code("TOKEN_INVALID")),
    c("not base64url", post("@@@.@@@.@@@"), code("TOKEN_INVALID")),
    c("hand-signed control (same key, same claims)", post(handSigned({ alg: "HS256", typ: "JWT" }, {})), { status: 201 }),
    c("unknown crit header", post(handSigned({ alg: "HS256", crit: ["x-unknown"], "x-unknown": 1 }, {})), code("TOKEN_INVALID")),
    c("token of 9,000 characters", post("a".repeat(9000)), code("TOKEN_INVALID")),
    // origin
    c("Origin not allowed", request("POST", TICKET, { authorization: `Bearer ${valid}`, origin: "https://evil.example" }), code("ORIGIN_FORBIDDEN")),
    c("Origin: null", request("POST", TICKET, { authorization: `Bearer ${valid}`, origin: "null" }), code("ORIGIN_FORBIDDEN")),
    c("preflight from an allowed origin", request("OPTIONS", TICKET, { origin: ORIGIN, "access-control-request-method": "POST" }), { status: 204 }),
    c("preflight from another origin", request("OPTIONS", TICKET, { origin: "https://evil.example", "access-control-request-method": "POST" }), code("ORIGIN_FORBIDDEN")),
    c("preflight without Origin", request("OPTIONS", TICKET, {}), code("ORIGIN_FORBIDDEN")),
    // bodies and content types
    c("JSON body '{'", post(valid, json, "{"), code("BAD_REQUEST")),
    c("JSON body of garbage bytes", post(valid, json, Buffer.from([0xff, 0x00, 0x7b, 0xfe])), code("BAD_REQUEST")),
    c("JSON body with __proto__", post(valid, json, '{"__proto__":{"admin":true}}'), code("BAD_REQUEST")),
    c("JSON body over 1 KiB", post(valid, json, JSON.stringify({ pad: "x".repeat(2000) })), code("BODY_TOO_LARGE")),
    c("text/plain body", post(valid, { "content-type": "text/plain" }, "hello"), code("UNSUPPORTED_MEDIA_TYPE")),
    c("form body", post(valid, { "content-type": "application/x-www-form-urlencoded" }, "a=1"), code("UNSUPPORTED_MEDIA_TYPE")),
    c("application/jsonp body", post(valid, { "content-type": "application/jsonp" }, "{}"), code("UNSUPPORTED_MEDIA_TYPE")),
    c("body without Content-Type", post(valid, {}, "{}"), code("UNSUPPORTED_MEDIA_TYPE")),
    c("broken chunked encoding", request("POST", TICKET, { ...bearer(valid), ...json, "transfer-encoding": "chunked" }, Buffer.from("zz\r\n{}\r\n0\r\n\r\n")), { status: 400, parser: true }),
    // methods and paths
    ...["GET", "PUT", "DELETE", "PATCH"].map((m) => c(`${m} on the ticket endpoint`, request(m, TICKET, bearer(valid)), code("NOT_FOUND"))),
    c("trailing slash", request("POST", `${TICKET}/`, bearer(valid)), code("NOT_FOUND")),
    c("plain GET /ws", request("GET", "/ws?ticket=x", {}), code("UPGRADE_REQUIRED")),
    c("a path that is not a URL component", request("GET", "/api/%", {}), code("BAD_REQUEST")),
    // headers
    c("Authorization of 10 KB", post("a".repeat(10_000)), code("TOKEN_INVALID")),
    c("a header of 20 KB (Node refuses it)", post(valid, { "x-pad": "p".repeat(20_000) }), { status: 431, parser: true }),
    // internal API
    c("internal: valid publish", request("POST", EVENTS, { ...svc, ...json }, goodEvent), { status: 202 }),
    c("internal: valid revoke", request("POST", REVOKE, svc), { status: 200 }),
    c("internal: no Authorization", request("POST", EVENTS, { "x-service-id": "fuzz", ...json }, goodEvent), code("SERVICE_UNAUTHORIZED")),
    c("internal: wrong secret", request("POST", EVENTS, { authorization: "Bearer nope", "x-service-id": "fuzz", ...json }, goodEvent), code("SERVICE_UNAUTHORIZED")),
    c("internal: no X-Service-Id", request("POST", EVENTS, { authorization: `Bearer ${TEST_SERVICE_SECRET}`, ...json }, goodEvent), code("SERVICE_UNAUTHORIZED")),
    c("internal: a user JWT instead of the secret", request("POST", EVENTS, { ...bearer(valid), "x-service-id": "fuzz", ...json }, goodEvent), code("SERVICE_UNAUTHORIZED")),
    c("internal: body '{'", request("POST", EVENTS, { ...svc, ...json }, "{"), code("BAD_REQUEST")),
    c("internal: body []", request("POST", EVENTS, { ...svc, ...json }, "[]"), code("BAD_REQUEST")),
    c("internal: empty JSON body", request("POST", EVENTS, { ...svc, ...json }, ""), code("BAD_REQUEST")),
    c("internal: unknown event type", request("POST", EVENTS, { ...svc, ...json }, JSON.stringify({ type: "hack", run_id: "r", thread_id: "t" })), code("BAD_REQUEST")),
    c("internal: seq chosen by the caller", request("POST", EVENTS, { ...svc, ...json }, JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", seq: 1 })), code("BAD_REQUEST")),
    c("internal: data as a string", request("POST", EVENTS, { ...svc, ...json }, JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", data: "x" })), code("BAD_REQUEST")),
    c("internal: run_id of 200 characters", request("POST", EVENTS, { ...svc, ...json }, JSON.stringify({ type: "agent_thinking", run_id: "r".repeat(200), thread_id: "t" })), code("BAD_REQUEST")),
    // The verifier accepts a `sub` of up to 256 characters, and so does the route's schema.
    c("internal: publish for a user_id of 150 characters", request("POST", `/internal/v1/users/${"u".repeat(150)}/events`, { ...svc, ...json }, goodEvent), { status: 202 }),
    c("internal: revoke a user_id of 256 characters", request("POST", `/internal/v1/users/${"u".repeat(256)}/revoke`, svc), { status: 200 }),
    c("internal: user_id of 300 characters", request("POST", `/internal/v1/users/${"u".repeat(300)}/events`, { ...svc, ...json }, goodEvent), code("BAD_REQUEST")),
    c("internal: text/plain", request("POST", EVENTS, { ...svc, "content-type": "text/plain" }, goodEvent), code("UNSUPPORTED_MEDIA_TYPE")),
    c("internal: body of 70 KB", request("POST", EVENTS, { ...svc, ...json }, JSON.stringify({ type: "agent_thinking", run_id: "r", thread_id: "t", data: { pad: "x".repeat(70_000) } })), code("BODY_TOO_LARGE")),
    c("internal: __proto__ in the body", request("POST", EVENTS, { ...svc, ...json }, '{"type":"agent_thinking","run_id":"r","thread_id":"t","__proto__":{"x":1}}'), code("BAD_REQUEST")),
    c("internal: GET on events", request("GET", EVENTS, svc), code("NOT_FOUND")),
    c("internal: revoke with body '{'", request("POST", REVOKE, { ...svc, ...json }, "{"), code("BAD_REQUEST")),
    c("internal: revoke with a 2 KB body", request("POST", REVOKE, { ...svc, ...json }, JSON.stringify({ pad: "x".repeat(2000) })), code("BODY_TOO_LARGE")),
    // the batch endpoint: bad items fail alone (207); a body that is not a batch is refused whole
    c("batch: valid", request("POST", BATCH, { ...svc, ...json }, `[${batchItem}]`), { status: 207 }),
    c("batch: no Authorization", request("POST", BATCH, { "x-service-id": "fuzz", ...json }, `[${batchItem}]`), code("SERVICE_UNAUTHORIZED")),
    c("batch: an object, not an array", request("POST", BATCH, { ...svc, ...json }, batchItem), code("BAD_REQUEST")),
    c("batch: empty", request("POST", BATCH, { ...svc, ...json }, "[]"), code("BAD_REQUEST")),
    c("batch: 501 items", request("POST", BATCH, { ...svc, ...json }, `[${Array(501).fill(batchItem).join(",")}]`), code("BAD_REQUEST")),
    c("batch: body of 3 MB", request("POST", BATCH, { ...svc, ...json }, `[${Array(40).fill(JSON.stringify({ ...JSON.parse(batchItem), data: { pad: "x".repeat(75_000) } })).join(",")}]`), code("BODY_TOO_LARGE")),
    c("batch: items nested 100,000 deep, with seq, and junk (each refused alone)", request("POST", BATCH, { ...svc, ...json }, `[${batchItem.replace('"data":{}', `"data":${'{"a":'.repeat(100_000)}1${"}".repeat(100_000)}`)},${batchItem.replace("{", '{"seq":1,')},5,null,[]]`), { status: 207 }),
    // Prototype poisoning is refused by the JSON parser, for the whole body.
    c("batch: __proto__ in an item", request("POST", BATCH, { ...svc, ...json }, `[${batchItem},{"__proto__":{"x":1}}]`), code("BAD_REQUEST")),
  ];
  return list;
}

/** Random requests from the same parts. */
function fuzzer(seed: number, tokens: string[]) {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
  const methods = ["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];
  const paths = [TICKET, TICKET, EVENTS, EVENTS, BATCH, REVOKE, `${TICKET}?x=%zz`, "/internal/v1/users/%00/events", "/internal/v1/users/../events", "/api/", "/healthz", "/readyz", "/ws", "/", "/internal/v1/users/a%2Fb/revoke"];
  const auths = [...tokens.map((t) => `Bearer ${t}`), `Bearer ${TEST_SERVICE_SECRET}`, "Bearer", "Basic Zm9vOmJhcg==", "", `Bearer ${"x".repeat(300)}`, "bearer lower"];
  const types = ["application/json", "application/json", "text/plain", "application/xml", "multipart/form-data; boundary=x", "application/json; charset=latin1", ""];
  const bodies: Array<() => string | Buffer | undefined> = [
    () => undefined,
    () => "",
    () => "{}",
    () => goodEvent,
    () => `[${batchItem},${goodEvent},{}]`,
    () => bytes(1 + Math.floor(rnd() * 300)),
    () => "[".repeat(5000) + "]".repeat(5000),
    () => JSON.stringify({ type: pick(["agent_thinking", "agent_error", 5, null]), run_id: pick(["r", "", 7]), thread_id: "t", data: pick([{}, [], "x", { deep: { a: [1, 2, { b: null }] } }]) }),
    () => `{"type":"agent_thinking","run_id":"r","thread_id":"t","data":${"{\"a\":".repeat(2000)}1${"}".repeat(2000)}}`,
    () => "x".repeat(Math.floor(rnd() * 3000)),
  ];
  return (): { name: string; raw: Buffer } => {
    const method = pick(methods);
    const path = pick(paths);
    const headers: Record<string, string> = {};
    const auth = pick(auths);
    if (auth) headers.authorization = auth;
    if (rnd() < 0.7) headers.origin = pick([ORIGIN, ORIGIN, "https://evil.example", "null"]);
    if (rnd() < 0.5) headers["x-service-id"] = pick(["fuzz", "", "x".repeat(100)]);
    const body = pick(bodies)();
    const type = pick(types);
    if (body !== undefined && type) headers["content-type"] = type;
    return { name: `${method} ${path.slice(0, 50)} auth=${auth.slice(0, 12)} type=${type} body=${body === undefined ? "none" : `${body.length}B`}`, raw: request(method, path, headers, body) };
  };
}

/** One request on its own connection (a refused request may close it). */
async function send(port: number, raw: Buffer): Promise<HttpResponse | { status: 0; body: string; headers: Record<string, string> }> {
  const conn = new HttpConn("127.0.0.1", port, 5_000);
  try {
    return await conn.sendRaw(raw);
  } catch (err) {
    return { status: 0, body: (err as Error).message, headers: {} };
  } finally {
    conn.close();
  }
}

type Verdict = { ok: boolean; why?: string; outside?: boolean };

/** The contract's shape for an app answer: 4xx with {"error":{"code","message"}} and the table's status for the code. */
function judgeShape(res: { status: number; body: string; headers: Readonly<Record<string, string>> }, head = false): Verdict {
  if (res.status >= 500 || res.status === 0) return { ok: false, why: `status ${res.status}: ${res.body.slice(0, 120)}` };
  // An answer to HEAD has no body to judge.
  if (res.status < 400 || head) return { ok: true };
  let parsed: { error?: { code?: string; message?: string } | string; statusCode?: number; message?: string } | undefined;
  try {
    parsed = JSON.parse(res.body) as typeof parsed;
  } catch {
    // Node's own refusals (before Fastify): 431 oversized headers, 400 malformed request.
    if ((res.status === 431 || res.status === 400) && res.body === "") return { ok: true, outside: true };
    return { ok: false, why: `status ${res.status} without the error shape: ${JSON.stringify(res.body.slice(0, 120))}` };
  }
  // Fastify's clientErrorHandler answers what Node's HTTP parser refused (before any route) in its own shape.
  if ((res.status === 400 || res.status === 431) && parsed?.message !== undefined && typeof parsed.error === "string" && /^(Client Error|Exceeded maximum allowed HTTP header size)$/.test(parsed.message)) {
    return { ok: true, outside: true };
  }
  const error = typeof parsed?.error === "object" ? parsed.error : undefined;
  const code = error?.code;
  if (typeof code !== "string" || typeof error?.message !== "string") return { ok: false, why: `status ${res.status}, not the error shape: ${res.body.slice(0, 160)}` };
  const spec = (ERRORS as Record<string, { status?: number }>)[code];
  if (!spec) return { ok: false, why: `unknown code ${code}` };
  if (spec.status !== res.status) return { ok: false, why: `${code} with status ${res.status}, the table says ${spec.status}` };
  if (res.status === 401 && !res.headers["www-authenticate"]) return { ok: false, why: "401 without WWW-Authenticate" };
  if ((res.status === 429 || res.status === 503) && !res.headers["retry-after"]) return { ok: false, why: `${res.status} without Retry-After` };
  return { ok: true };
}

drill(`drill 4: HTTP fuzzing (table + ${FUZZ_CASES} random, seed ${SEED})`, quick ? 60_000 : 180_000, async () => {
  const redis = await startRedis();
  const gw = await spawnGatewayProc({
    name: "drill4-gw",
    env: {
      NODE_ENV: "production",
      REDIS_URL: redis.url,
      ALLOWED_ORIGINS: ORIGIN,
      JWT_SECRET_KEY: TEST_JWT_KEY,
      JWT_SECRET_KEY_PREVIOUS: TEST_PREVIOUS_JWT_KEY,
      JWT_ISSUER: ISSUER,
      JWT_AUDIENCE: AUDIENCE,
      SERVICE_SECRET: TEST_SERVICE_SECRET,
      TICKET_RATE_PER_IP: "1000000",
      TICKET_RATE_PER_USER: "100000",
    },
  });
  try {
    const table = await cases();
    const tableFailures: string[] = [];
    const statuses: number[] = [];
    let outside = 0;
    for (const tc of table) {
      const res = await send(gw.port, tc.raw);
      statuses.push(res.status);
      const want = tc.want;
      const shape = judgeShape(res);
      if (shape.outside) outside++;
      if (want.parser) {
        if (res.status !== want.status) tableFailures.push(`${tc.name}: got ${res.status}, want ${want.status}`);
        continue;
      }
      let got = `${res.status}`;
      try {
        const body = JSON.parse(res.body) as { error?: { code?: string } | string; code?: string };
        if (typeof body.error === "object") got += ` ${body.error.code ?? ""}`.trimEnd();
        else if (body.code) got += ` (not the contract's shape: ${body.code})`;
      } catch {
        /* no JSON */
      }
      const expected = `${want.status}${want.code ? ` ${want.code}` : ""}`;
      if (got !== expected && !(res.status === want.status && !want.code)) tableFailures.push(`${tc.name}: got ${got}, want ${expected}`);
      else if (!shape.ok) tableFailures.push(`${tc.name}: ${shape.why}`);
    }

    const tokens = [await token({}), await token({ exp: now() - 60 }), await token({ aud: "x" }), `${enc({ alg: "none" })}.${enc({ sub: "x" })}.`];
    const next = fuzzer(SEED, tokens);
    const fuzzFailures: string[] = [];
    const fuzzStatuses: number[] = [];
    let i = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (i < FUZZ_CASES) {
          i++;
          const tc = next();
          const res = await send(gw.port, tc.raw);
          fuzzStatuses.push(res.status);
          const shape = judgeShape(res, tc.name.startsWith("HEAD "));
          if (shape.outside) outside++;
          if (!shape.ok) fuzzFailures.push(`${tc.name}: ${shape.why}`);
        }
      }),
    );
    const alive = gw.alive();
    const health = await fetch(`${gw.url}/healthz`).then((r) => r.status, () => 0);
    const internalErrors = (gw.log().match(/"event":"http_internal_error"/g) ?? []).length;
    const all = [...statuses, ...fuzzStatuses];
    const fives = all.filter((s) => s >= 500 || s === 0).length;
    const figures = [
      `${table.length} table cases (${table.length - tableFailures.length} as the contract says)`,
      `${FUZZ_CASES} random requests, statuses ${JSON.stringify(tally(fuzzStatuses, String))}`,
      `5xx or no answer: ${fives}`,
      `refused by the HTTP parser before routing (Fastify's own body shape): ${outside}`,
      `http_internal_error log lines ${internalErrors}`,
      `process alive ${alive}, /healthz ${health}`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("every table case gets its status and code", tableFailures.length === 0, tableFailures.slice(0, 6).join(" | ")),
        check("never a 5xx (nor a dropped request)", fives === 0, String(fives)),
        check("every random request gets a 4xx/2xx in the contract's shape", fuzzFailures.length === 0, [...new Set(fuzzFailures)].slice(0, 4).join(" | ")),
        check("no unexpected error logged", internalErrors === 0, String(internalErrors)),
        check("process still up", alive && health === 200),
      ],
    };
  } finally {
    await gw.stop();
    await redis.stop();
  }
});
