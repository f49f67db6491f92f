import { decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from "jose";
import type { Config } from "../config.js";
import { GatewayError } from "../errors.js";
import { createKeySet, type KeySet, type KeySetOptions } from "./jwks.js";

/**
 * Verifies user JWTs locally (docs/protocol.md §1). The algorithm is pinned
 * per key kind, so a token cannot choose how it is checked: HS256 tokens are
 * checked only against the shared keys (current, then previous during a
 * rotation), RS256/ES256 tokens only against the auth service's JWKS.
 * `alg: none` and anything else are rejected before any key is tried.
 */
export interface VerifiedToken {
  readonly sub: string;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
  /** The token's `iat`, epoch milliseconds, when it has one (checked against a revoke's `not_before`). */
  readonly issuedAt?: number;
}

export type TokenVerifier = ReturnType<typeof createTokenVerifier>;

const CLOCK_TOLERANCE_S = 5;
const MAX_TOKEN_LENGTH = 8192;
const MAX_SUB_LENGTH = 256;
const ASYMMETRIC = ["RS256", "ES256"];
/** The latest time a JavaScript Date can hold (ECMA-262 §21.4.1.1): an `exp` beyond it would make every use of the session's end a RangeError. */
const MAX_DATE_MS = 8.64e15;

export function createTokenVerifier(jwt: Config["jwt"], options: { now?: () => number; keySet?: KeySetOptions } = {}) {
  const encoder = new TextEncoder();
  // Imported once as CryptoKeys: given raw bytes, jose imports the key again on
  // every verification (a fifth of the ticket endpoint's CPU in the profile).
  const hmacKeys = Promise.all(
    [jwt.secretKey, jwt.previousSecretKey]
      .filter((k): k is string => k !== undefined)
      .map((k) => crypto.subtle.importKey("raw", encoder.encode(k), { name: "HMAC", hash: "SHA-256" }, false, ["verify"])),
  );
  // Kept through outages of the endpoint, refreshed on an unknown `kid` at most once per cooldown (./jwks.ts).
  const keySet: KeySet | undefined = jwt.jwksUrl ? createKeySet(new URL(jwt.jwksUrl), options.keySet) : undefined;
  const now = options.now ?? Date.now;

  // Built once: only the clock changes per call, and only when one is injected (jose reads the real one itself).
  const claimRules = { issuer: jwt.issuer, audience: jwt.audience, clockTolerance: CLOCK_TOLERANCE_S, requiredClaims: ["sub", "exp"] };
  const hmacOptions = { ...claimRules, algorithms: ["HS256"] };
  const asymmetricOptions = { ...claimRules, algorithms: ASYMMETRIC };
  const withClock = <T extends object>(base: T): T => (options.now === undefined ? base : { ...base, currentDate: new Date(now()) });
  const algorithms = headerAlgorithms();

  function classify(err: unknown): GatewayError {
    if (err instanceof GatewayError) return err;
    if (err instanceof errors.JWTExpired) return new GatewayError("TOKEN_EXPIRED");
    return new GatewayError("TOKEN_INVALID");
  }

  async function verifyPayload(token: string): Promise<JWTPayload> {
    const alg = algorithms.of(token);
    const payload = await verifyWith(token, alg);
    algorithms.remember(token, alg);
    return payload;
  }

  async function verifyWith(token: string, alg: string | undefined): Promise<JWTPayload> {
    const keys = await hmacKeys;
    if (alg === "HS256" && keys.length > 0) {
      let last: unknown;
      for (const key of keys) {
        try {
          return (await jwtVerify(token, key, withClock(hmacOptions))).payload;
        } catch (err) {
          last = err;
          // Only a bad signature means "try the previous key"; an expired or
          // wrongly-claimed token is wrong under every key.
          if (!(err instanceof errors.JWSSignatureVerificationFailed)) break;
        }
      }
      throw last;
    }
    if (alg !== undefined && ASYMMETRIC.includes(alg) && keySet) {
      return (await jwtVerify(token, keySet.getKey, withClock(asymmetricOptions))).payload;
    }
    throw new GatewayError("TOKEN_INVALID");
  }

  return {
    /** The JWKS's state for readiness detail ("unused" without AUTH_JWKS_URL); never gates readiness. */
    keySetState: () => keySet?.state() ?? "unused",
    /** Fetches the JWKS ahead of the first token; a failure is recorded, not thrown. */
    warm: () => keySet?.warm() ?? Promise.resolve(),
    /** Resolves to the user id and expiry, or rejects with TOKEN_INVALID / TOKEN_EXPIRED / AUTH_UNAVAILABLE (503). */
    async verify(token: string): Promise<VerifiedToken> {
      if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw new GatewayError("TOKEN_INVALID");
      let payload: JWTPayload;
      try {
        payload = await verifyPayload(token);
      } catch (err) {
        throw classify(err);
      }
      const { sub, exp, iat } = payload;
      if (typeof sub !== "string" || sub.length === 0 || sub.length > MAX_SUB_LENGTH || !isDate(exp)) {
        throw new GatewayError("TOKEN_INVALID");
      }
      return { sub, expiresAt: exp * 1000, ...(isDate(iat) ? { issuedAt: iat * 1000 } : {}) };
    },
  };
}

/** Distinct protected headers whose `alg` is remembered; beyond them a header is decoded every time. */
const MAX_KNOWN_HEADERS = 64;

/**
 * The `alg` of a token's protected header. An issuer signs every token with
 * the same header, so its decoded `alg` is remembered by the header's text
 * instead of decoding it per call: only once a token with that header has
 * verified (strangers' headers cannot fill the bounded map), and jose still
 * parses and checks the header itself when it verifies.
 */
function headerAlgorithms() {
  const known = new Map<string, string | undefined>();
  const headerOf = (token: string) => token.slice(0, token.indexOf("."));
  return {
    of(token: string): string | undefined {
      const header = headerOf(token);
      if (known.has(header)) return known.get(header);
      try {
        return decodeProtectedHeader(token).alg;
      } catch {
        throw new GatewayError("TOKEN_INVALID");
      }
    },
    /** After a successful verification. */
    remember(token: string, alg: string | undefined): void {
      if (known.size < MAX_KNOWN_HEADERS) known.set(headerOf(token), alg);
    },
  };
}

/**
 * Whether a revoke's `not_before` (epoch ms, 0 for none) refuses the token:
 * issued before it, or with no `iat` at all while one is in force (fail closed).
 */
export function issuedBefore(token: VerifiedToken, notBeforeMs: number): boolean {
  return notBeforeMs > 0 && (token.issuedAt === undefined || token.issuedAt < notBeforeMs);
}

/** A NumericDate (seconds) that a JavaScript Date can hold. */
function isDate(seconds: unknown): seconds is number {
  return typeof seconds === "number" && Number.isFinite(seconds) && Math.abs(seconds * 1000) <= MAX_DATE_MS;
}

/** The token of an `Authorization: Bearer …` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header);
  return match?.[1];
}
