import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";
import type { Config } from "../../service/src/config.js";
import { GatewayError } from "../../service/src/errors.js";
import { bearerToken, createTokenVerifier } from "../../service/src/auth/verifier.js";
import { TEST_JWT_KEY, TEST_PREVIOUS_JWT_KEY } from "../support/gateway.js";

/**
 * docs/protocol.md §1: user tokens are verified locally; HS256 with the
 * current key (or the previous one during a rotation), RS256/ES256 from the
 * auth service's JWKS; algorithms pinned; clock tolerance at most 5 s.
 */

const encoder = new TextEncoder();
const NOW_S = 1_800_000_000;
const NOW_MS = NOW_S * 1000;
const ISSUER = "https://auth.example.test";
const AUDIENCE = "chat-gateway";

const HS_ONLY: Config["jwt"] = { secretKey: TEST_JWT_KEY, previousSecretKey: undefined, jwksUrl: undefined, issuer: undefined, audience: undefined };
const ROTATING: Config["jwt"] = { ...HS_ONLY, previousSecretKey: TEST_PREVIOUS_JWT_KEY };

function verifierAt(jwt: Config["jwt"], nowMs = NOW_MS) {
  return createTokenVerifier(jwt, { now: () => nowMs });
}

/** Signs `claims` (sub "user-1", exp in an hour unless given; `undefined` leaves a claim out). */
async function sign(
  claims: Omit<JWTPayload, "sub" | "exp"> & { sub?: unknown; exp?: unknown },
  key: Uint8Array | CryptoKey = encoder.encode(TEST_JWT_KEY),
  header: { alg: string; kid?: string } = { alg: "HS256" },
): Promise<string> {
  const payload: Record<string, unknown> = { sub: "user-1", exp: NOW_S + 3600, iat: NOW_S, ...claims };
  for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
  return new SignJWT(payload as JWTPayload).setProtectedHeader({ typ: "JWT", ...header }).sign(key);
}

const b64url = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** The GatewayError code `promise` rejects with. */
async function rejection(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return (err as GatewayError).code;
  }
  throw new Error("the token was accepted");
}

describe("HS256 keys", () => {
  it("a token signed with the current key is accepted, giving its sub, exp and iat", async () => {
    const verified = await verifierAt(HS_ONLY).verify(await sign({ sub: "alice", exp: NOW_S + 600 }));
    expect(verified).toEqual({ sub: "alice", expiresAt: (NOW_S + 600) * 1000, issuedAt: NOW_S * 1000 });
  });

  it("an exp or iat beyond the JavaScript date range is TOKEN_INVALID, never a RangeError later", async () => {
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ exp: 1e13 })))).toBe("TOKEN_INVALID");
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ exp: Number.MAX_VALUE })))).toBe("TOKEN_INVALID");
    // An iat that no Date can hold is treated as absent (a revoke's not_before then refuses the token).
    expect((await verifierAt(HS_ONLY).verify(await sign({ iat: 1e300 }))).issuedAt).toBeUndefined();
  });

  it("during a rotation, a token signed with the previous key is accepted too", async () => {
    const verifier = verifierAt(ROTATING);
    expect((await verifier.verify(await sign({ sub: "old" }, encoder.encode(TEST_PREVIOUS_JWT_KEY)))).sub).toBe("old");
    expect((await verifier.verify(await sign({ sub: "new" }))).sub).toBe("new");
  });

  it("outside a rotation, a token signed with the previous key is TOKEN_INVALID", async () => {
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({}, encoder.encode(TEST_PREVIOUS_JWT_KEY))))).toBe("TOKEN_INVALID");
  });

  it("a token signed with any other key is TOKEN_INVALID", async () => {
    const wrong = encoder.encode("an-entirely-different-key-0123456789abcdef");
    expect(await rejection(verifierAt(ROTATING).verify(await sign({}, wrong)))).toBe("TOKEN_INVALID");
  });

  it("an expired token with a wrong signature is TOKEN_INVALID, not TOKEN_EXPIRED", async () => {
    const wrong = encoder.encode("an-entirely-different-key-0123456789abcdef");
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ exp: NOW_S - 3600 }, wrong)))).toBe("TOKEN_INVALID");
  });

  it("an expired token signed with the previous key is TOKEN_EXPIRED", async () => {
    const token = await sign({ exp: NOW_S - 60 }, encoder.encode(TEST_PREVIOUS_JWT_KEY));
    expect(await rejection(verifierAt(ROTATING).verify(token))).toBe("TOKEN_EXPIRED");
  });

  it("a token whose signature was tampered with is TOKEN_INVALID", async () => {
    const token = await sign({});
    const [h, p, s] = token.split(".") as [string, string, string];
    const flipped = `${s.slice(0, -2)}${s.at(-2) === "A" ? "B" : "A"}${s.at(-1)}`;
    expect(await rejection(verifierAt(HS_ONLY).verify(`${h}.${p}.${flipped}`))).toBe("TOKEN_INVALID");
    // A payload swapped under a valid signature.
    const other = await sign({ sub: "mallory" }, encoder.encode("an-entirely-different-key-0123456789abcdef"));
    expect(await rejection(verifierAt(HS_ONLY).verify(`${h}.${other.split(".")[1]}.${s}`))).toBe("TOKEN_INVALID");
  });
});

describe("expiry and clock tolerance", () => {
  it("a token whose exp has passed is TOKEN_EXPIRED", async () => {
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ exp: NOW_S - 3600 })))).toBe("TOKEN_EXPIRED");
  });

  it("a token up to 5 s past its exp is still accepted (clock tolerance)", async () => {
    const token = await sign({ exp: NOW_S });
    for (const lateMs of [0, 1000, 4000, 4999]) {
      const verified = await verifierAt(HS_ONLY, NOW_MS + lateMs).verify(token);
      // The session still ends exactly at exp: the tolerance does not move it.
      expect(verified.expiresAt, `${lateMs} ms late`).toBe(NOW_MS);
    }
  });

  it("a token 6 s past its exp is TOKEN_EXPIRED", async () => {
    const token = await sign({ exp: NOW_S });
    expect(await rejection(verifierAt(HS_ONLY, NOW_MS + 6000).verify(token))).toBe("TOKEN_EXPIRED");
  });

  it("the tolerance is at most 5 s: exactly 5 s late is already TOKEN_EXPIRED", async () => {
    const token = await sign({ exp: NOW_S });
    expect(await rejection(verifierAt(HS_ONLY, NOW_MS + 5000).verify(token))).toBe("TOKEN_EXPIRED");
  });
});

describe("required claims", () => {
  it("a token without sub is TOKEN_INVALID", async () => {
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ sub: undefined })))).toBe("TOKEN_INVALID");
  });

  it("a token without exp is TOKEN_INVALID", async () => {
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ exp: undefined })))).toBe("TOKEN_INVALID");
  });

  it("a sub that is not a non-empty string is TOKEN_INVALID", async () => {
    for (const sub of ["", 42, ["user-1"], { id: "user-1" }, "u".repeat(257)]) {
      expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ sub }))), JSON.stringify(sub).slice(0, 40)).toBe("TOKEN_INVALID");
    }
  });

  it("an exp that is not a number is TOKEN_INVALID", async () => {
    for (const exp of [String(NOW_S + 3600), null, true]) {
      expect(await rejection(verifierAt(HS_ONLY).verify(await sign({ exp }))), JSON.stringify(exp)).toBe("TOKEN_INVALID");
    }
  });
});

describe("issuer and audience", () => {
  const CHECKED: Config["jwt"] = { ...HS_ONLY, issuer: ISSUER, audience: AUDIENCE };

  it("when configured, the right iss and aud are accepted", async () => {
    expect((await verifierAt(CHECKED).verify(await sign({ iss: ISSUER, aud: AUDIENCE }))).sub).toBe("user-1");
    expect((await verifierAt(CHECKED).verify(await sign({ iss: ISSUER, aud: ["other", AUDIENCE] }))).sub).toBe("user-1");
  });

  it("when configured, a wrong or missing iss is TOKEN_INVALID", async () => {
    expect(await rejection(verifierAt(CHECKED).verify(await sign({ iss: "https://evil.example", aud: AUDIENCE })))).toBe("TOKEN_INVALID");
    expect(await rejection(verifierAt(CHECKED).verify(await sign({ aud: AUDIENCE })))).toBe("TOKEN_INVALID");
  });

  it("when configured, a wrong or missing aud is TOKEN_INVALID", async () => {
    expect(await rejection(verifierAt(CHECKED).verify(await sign({ iss: ISSUER, aud: "another-service" })))).toBe("TOKEN_INVALID");
    expect(await rejection(verifierAt(CHECKED).verify(await sign({ iss: ISSUER })))).toBe("TOKEN_INVALID");
  });

  it("when not configured, iss and aud are not checked", async () => {
    expect((await verifierAt(HS_ONLY).verify(await sign({ iss: "https://anyone.example", aud: "anything" }))).sub).toBe("user-1");
  });
});

describe("pinned algorithms", () => {
  it("alg none is TOKEN_INVALID, however it is spelled", async () => {
    const payload = b64url({ sub: "user-1", exp: NOW_S + 3600 });
    for (const alg of ["none", "None", "NONE", "nOnE"]) {
      const header = b64url({ alg, typ: "JWT" });
      for (const token of [`${header}.${payload}.`, `${header}.${payload}`, `${header}.${payload}.${b64url("sig")}`]) {
        expect(await rejection(verifierAt(ROTATING).verify(token)), token).toBe("TOKEN_INVALID");
      }
    }
  });

  it("a token without alg is TOKEN_INVALID", async () => {
    const token = `${b64url({ typ: "JWT" })}.${b64url({ sub: "user-1", exp: NOW_S + 3600 })}.`;
    expect(await rejection(verifierAt(ROTATING).verify(token))).toBe("TOKEN_INVALID");
  });

  it("HS384 and HS512 tokens signed with the right key are TOKEN_INVALID: only HS256 is accepted", async () => {
    for (const alg of ["HS384", "HS512"]) {
      expect(await rejection(verifierAt(HS_ONLY).verify(await sign({}, encoder.encode(TEST_JWT_KEY), { alg }))), alg).toBe("TOKEN_INVALID");
    }
  });

  it("an RS256 or ES256 token is TOKEN_INVALID when only HS256 keys are configured", async () => {
    const rsa = await generateKeyPair("RS256");
    const ec = await generateKeyPair("ES256");
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({}, rsa.privateKey, { alg: "RS256" })))).toBe("TOKEN_INVALID");
    expect(await rejection(verifierAt(HS_ONLY).verify(await sign({}, ec.privateKey, { alg: "ES256" })))).toBe("TOKEN_INVALID");
  });
});

describe("garbage", () => {
  it.each([
    ["empty", ""],
    ["a word", "garbage"],
    ["three dots", "..."],
    ["three short parts", "a.b.c"],
    ["a header that is not JSON", `${b64url("not json")}.${b64url({ sub: "x" })}.sig`],
    ["a header that is a JSON array", `${b64url(["HS256"])}.${b64url({ sub: "x" })}.sig`],
    ["not base64url", "eyJ!!!.eyJ???.***"],
    ["five parts (a JWE shape)", "a.b.c.d.e"],
    ["whitespace inside", "eyJhbGciOiJIUzI1NiJ9 .e30.sig"],
    ["over 8 KiB", `${b64url({ alg: "HS256" })}.${"A".repeat(9000)}.sig`],
  ])("%s is TOKEN_INVALID", async (_name, token) => {
    expect(await rejection(verifierAt(ROTATING).verify(token))).toBe("TOKEN_INVALID");
  });

  it("a payload that is not JSON, under a valid HS256 signature, is TOKEN_INVALID", async () => {
    const { createHmac } = await import("node:crypto");
    const input = `${b64url({ alg: "HS256" })}.${b64url("not json")}`;
    const sig = createHmac("sha256", TEST_JWT_KEY).update(input).digest("base64url");
    expect(await rejection(verifierAt(HS_ONLY).verify(`${input}.${sig}`))).toBe("TOKEN_INVALID");
  });
});

describe("JWKS (RS256 / ES256)", () => {
  let server: Server;
  let jwksUrl: string;
  let fetches = 0;
  let rsa: { privateKey: CryptoKey; publicKey: CryptoKey };
  let ec: { privateKey: CryptoKey; publicKey: CryptoKey };
  let rsaJwk: JWK;

  beforeAll(async () => {
    rsa = await generateKeyPair("RS256");
    ec = await generateKeyPair("ES256");
    rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" };
    const ecJwk = { ...(await exportJWK(ec.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" };
    const body = JSON.stringify({ keys: [rsaJwk, ecJwk] });
    server = createServer((req, res) => {
      fetches++;
      if (req.url === "/.well-known/jwks.json") res.writeHead(200, { "content-type": "application/json" }).end(body);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const jwksOnly = (): Config["jwt"] => ({ secretKey: undefined, previousSecretKey: undefined, jwksUrl, issuer: undefined, audience: undefined });
  const jwksAndHs = (): Config["jwt"] => ({ ...jwksOnly(), secretKey: TEST_JWT_KEY });

  it("an RS256 token signed by a key of the set is accepted", async () => {
    const verified = await verifierAt(jwksOnly()).verify(await sign({ sub: "rsa-user" }, rsa.privateKey, { alg: "RS256", kid: "rsa-1" }));
    expect(verified.sub).toBe("rsa-user");
  });

  it("an ES256 token signed by a key of the set is accepted", async () => {
    const verified = await verifierAt(jwksOnly()).verify(await sign({ sub: "ec-user" }, ec.privateKey, { alg: "ES256", kid: "ec-1" }));
    expect(verified.sub).toBe("ec-user");
  });

  it("the key set is fetched once and then cached", async () => {
    const verifier = verifierAt(jwksOnly());
    const before = fetches;
    for (let i = 0; i < 5; i++) {
      await verifier.verify(await sign({ sub: `u${i}` }, rsa.privateKey, { alg: "RS256", kid: "rsa-1" }));
      await verifier.verify(await sign({ sub: `u${i}` }, ec.privateKey, { alg: "ES256", kid: "ec-1" }));
    }
    expect(fetches - before).toBe(1);
  });

  it("HS256 keys keep working alongside the JWKS", async () => {
    const verifier = verifierAt(jwksAndHs());
    expect((await verifier.verify(await sign({ sub: "hs" }))).sub).toBe("hs");
    expect((await verifier.verify(await sign({ sub: "rs" }, rsa.privateKey, { alg: "RS256", kid: "rsa-1" }))).sub).toBe("rs");
  });

  it("a token with an unknown kid is TOKEN_INVALID", async () => {
    const stranger = await generateKeyPair("RS256");
    const token = await sign({}, stranger.privateKey, { alg: "RS256", kid: "unknown-kid" });
    expect(await rejection(verifierAt(jwksOnly()).verify(token))).toBe("TOKEN_INVALID");
  });

  it("a token with a known kid but signed by another key is TOKEN_INVALID", async () => {
    const stranger = await generateKeyPair("RS256");
    const token = await sign({}, stranger.privateKey, { alg: "RS256", kid: "rsa-1" });
    expect(await rejection(verifierAt(jwksOnly()).verify(token))).toBe("TOKEN_INVALID");
  });

  it("an ES256 token that names the RSA key's kid is TOKEN_INVALID", async () => {
    const token = await sign({}, ec.privateKey, { alg: "ES256", kid: "rsa-1" });
    expect(await rejection(verifierAt(jwksOnly()).verify(token))).toBe("TOKEN_INVALID");
  });

  it("an expired JWKS token is TOKEN_EXPIRED", async () => {
    const token = await sign({ exp: NOW_S - 60 }, rsa.privateKey, { alg: "RS256", kid: "rsa-1" });
    expect(await rejection(verifierAt(jwksOnly()).verify(token))).toBe("TOKEN_EXPIRED");
  });

  it("iss and aud are checked on JWKS tokens too", async () => {
    const checked = { ...jwksOnly(), issuer: ISSUER, audience: AUDIENCE };
    const good = await sign({ iss: ISSUER, aud: AUDIENCE }, rsa.privateKey, { alg: "RS256", kid: "rsa-1" });
    const bad = await sign({ iss: "https://evil.example", aud: AUDIENCE }, rsa.privateKey, { alg: "RS256", kid: "rsa-1" });
    expect((await verifierAt(checked).verify(good)).sub).toBe("user-1");
    expect(await rejection(verifierAt(checked).verify(bad))).toBe("TOKEN_INVALID");
  });

  it("algorithm confusion: an HS256 token signed with the JWKS public key's bytes is TOKEN_INVALID", async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const secrets = [pem, pem.trim(), JSON.stringify(rsaJwk), rsaJwk.n as string];
    for (const secret of secrets) {
      const token = await sign({ sub: "attacker" }, encoder.encode(secret), { alg: "HS256", kid: "rsa-1" });
      expect(await rejection(verifierAt(jwksOnly()).verify(token)), "JWKS only").toBe("TOKEN_INVALID");
      expect(await rejection(verifierAt(jwksAndHs()).verify(token)), "JWKS and HS256 keys").toBe("TOKEN_INVALID");
    }
  });

  it("alg none naming a kid of the set is TOKEN_INVALID", async () => {
    const token = `${b64url({ alg: "none", kid: "rsa-1" })}.${b64url({ sub: "user-1", exp: NOW_S + 3600 })}.`;
    expect(await rejection(verifierAt(jwksOnly()).verify(token))).toBe("TOKEN_INVALID");
  });

  it("an unreachable JWKS makes tokens AUTH_UNAVAILABLE (503, not a 401 about the token) rather than hanging", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", () => resolve()));
    const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/jwks.json`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const token = await sign({}, rsa.privateKey, { alg: "RS256", kid: "rsa-1" });
    const started = Date.now();
    expect(await rejection(verifierAt({ ...jwksOnly(), jwksUrl: url }).verify(token))).toBe("AUTH_UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(3000);
  });
});

describe("the Authorization header", () => {
  it("yields the token of a Bearer header, whatever the scheme's case", () => {
    expect(bearerToken("Bearer abc.def.ghi")).toBe("abc.def.ghi");
    expect(bearerToken("bearer abc.def.ghi")).toBe("abc.def.ghi");
    expect(bearerToken("Bearer   abc.def.ghi  ")).toBe("abc.def.ghi");
  });

  it("yields nothing for a missing, empty or non-Bearer header", () => {
    for (const header of [undefined, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b", "Bearerabc"]) {
      expect(bearerToken(header), String(header)).toBeUndefined();
    }
  });
});
