import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Config } from "../../service/src/config.js";
import { GatewayError } from "../../service/src/errors.js";
import { KEY_SET_POLICY, type KeySetState } from "../../service/src/auth/jwks.js";
import { createTokenVerifier } from "../../service/src/auth/verifier.js";
import { JwksServer, signingKey, signWith, type SigningKey } from "../support/jwks-server.js";

/**
 * docs/protocol.md §1: an outage of the auth service's JWKS endpoint is never
 * a user's 401. The last good key set keeps verifying (stale-if-error), a
 * token that cannot be checked gets 503 AUTH_UNAVAILABLE with a retry delay,
 * and a kid the set does not hold costs one bounded refresh, not one per
 * request. The key set's clock is a fake, so no test sleeps through a cooldown.
 */

const keyPair = signingKey;
const sign = (key: SigningKey, sub = "user-1") => signWith(key, sub);

/** The GatewayError `promise` rejects with. */
async function rejection(promise: Promise<unknown>): Promise<GatewayError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return err as GatewayError;
  }
  throw new Error("the token was accepted");
}

describe("the JWKS key set through outages", () => {
  const jwks = new JwksServer();
  let current: SigningKey;
  let next: SigningKey;
  let clock = 0;
  let states: Array<[KeySetState, string | undefined]> = [];

  const verifier = () => {
    const jwt: Config["jwt"] = { secretKey: undefined, previousSecretKey: undefined, jwksUrl: jwks.url, issuer: undefined, audience: undefined };
    return createTokenVerifier(jwt, { keySet: { now: () => clock, onStateChange: (s, reason) => states.push([s, reason]) } });
  };

  beforeAll(async () => {
    current = await keyPair("key-current");
    next = await keyPair("key-next");
    await jwks.start();
  });
  afterAll(() => jwks.stop());
  beforeEach(() => {
    jwks.mode = "up";
    jwks.keys = [current.jwk];
    jwks.hits = 0;
    clock = 1_000_000;
    states = [];
  });

  it("keeps verifying with the last good set while the endpoint fails, and refreshes at most once per retry period", async () => {
    const v = verifier();
    expect((await v.verify(await sign(current))).sub).toBe("user-1");
    jwks.mode = "reset";
    clock += KEY_SET_POLICY.refreshAfterMs + 1; // old enough to be refreshed in the background
    const tokens = await Promise.all(Array.from({ length: 20 }, (_, i) => sign(current, `u${i}`)));
    for (const token of tokens) expect((await v.verify(token)).sub).toMatch(/^u\d+$/);
    await new Promise((r) => setTimeout(r, 50)); // let the background refresh fail
    expect(jwks.hits).toBe(2); // the first fetch, then one background refresh for twenty tokens
    expect(v.keySetState()).toBe("stale");
    expect(states).toEqual([["stale", expect.any(String)]]);
  });

  it("an instance that never fetched the set answers AUTH_UNAVAILABLE with a retry delay, never TOKEN_INVALID, with one fetch per burst", async () => {
    jwks.mode = "reset";
    const v = verifier();
    const token = await sign(current);
    const errors = await Promise.all(Array.from({ length: 10 }, () => rejection(v.verify(token))));
    for (const err of errors) {
      expect(err.code).toBe("AUTH_UNAVAILABLE");
      expect(err.status).toBe(503);
      expect(err.retryAfter).toBeGreaterThanOrEqual(1);
      expect(err.retryAfter).toBeLessThanOrEqual(Math.ceil(KEY_SET_POLICY.retryMs / 1000));
    }
    expect(jwks.hits).toBe(1);
    expect(v.keySetState()).toBe("unavailable");
    // Within the retry period, no new fetch: still 503.
    expect((await rejection(v.verify(token))).code).toBe("AUTH_UNAVAILABLE");
    expect(jwks.hits).toBe(1);
  });

  it("a 500 from the endpoint is an outage too", async () => {
    jwks.mode = "500";
    expect((await rejection(verifier().verify(await sign(current)))).code).toBe("AUTH_UNAVAILABLE");
  });

  it("serves again at the first request after the retry period once the endpoint is back", async () => {
    jwks.mode = "reset";
    const v = verifier();
    const token = await sign(current);
    expect((await rejection(v.verify(token))).code).toBe("AUTH_UNAVAILABLE");
    jwks.mode = "up";
    clock += KEY_SET_POLICY.retryMs;
    expect((await v.verify(token)).sub).toBe("user-1");
    expect(v.keySetState()).toBe("ok");
    expect(states.map(([s]) => s)).toEqual(["unavailable", "ok"]);
  });

  it("past the stale-if-error period the last good set no longer verifies: AUTH_UNAVAILABLE", async () => {
    const v = verifier();
    const token = await sign(current);
    await v.verify(token);
    jwks.mode = "reset";
    clock += KEY_SET_POLICY.staleIfErrorMs + 1;
    expect((await rejection(v.verify(token))).code).toBe("AUTH_UNAVAILABLE");
    expect(v.keySetState()).toBe("unavailable");
  });

  it("a flood of made-up kids costs one refresh of the set, and each is TOKEN_INVALID", async () => {
    const v = verifier();
    await v.verify(await sign(current));
    clock += KEY_SET_POLICY.cooldownMs; // the cooldown after the first fetch has passed
    const strangers = await Promise.all(Array.from({ length: 30 }, (_, i) => keyPair(`made-up-${i}`)));
    const tokens = await Promise.all(strangers.map((k) => sign(k)));
    const codes = await Promise.all(tokens.map(async (t) => (await rejection(v.verify(t))).code));
    expect(new Set(codes)).toEqual(new Set(["TOKEN_INVALID"]));
    expect(jwks.hits).toBe(2);
    // And again within the cooldown: no fetch at all.
    for (const t of tokens.slice(0, 5)) expect((await rejection(v.verify(t))).code).toBe("TOKEN_INVALID");
    expect(jwks.hits).toBe(2);
  });

  it("a new key of the auth service is fetched on its first token after the cooldown", async () => {
    const v = verifier();
    await v.verify(await sign(current));
    jwks.keys = [current.jwk, next.jwk];
    clock += KEY_SET_POLICY.cooldownMs;
    expect((await v.verify(await sign(next, "rotated"))).sub).toBe("rotated");
    expect(jwks.hits).toBe(2);
  });

  it("an unknown kid while the endpoint is down is AUTH_UNAVAILABLE (it may be the auth service's new key), then accepted once it is back", async () => {
    const v = verifier();
    await v.verify(await sign(current));
    jwks.mode = "reset";
    jwks.keys = [current.jwk, next.jwk];
    clock += KEY_SET_POLICY.cooldownMs;
    const rotated = await sign(next, "rotated");
    expect((await rejection(v.verify(rotated))).code).toBe("AUTH_UNAVAILABLE");
    // The old key keeps working meanwhile.
    expect((await v.verify(await sign(current))).sub).toBe("user-1");
    jwks.mode = "up";
    clock += KEY_SET_POLICY.retryMs;
    expect((await v.verify(rotated)).sub).toBe("rotated");
  });

  it("warm() fetches ahead of the first token, and a failed warm-up is only recorded", async () => {
    const v = verifier();
    await v.warm();
    expect(jwks.hits).toBe(1);
    jwks.mode = "reset";
    const cold = verifier();
    await expect(cold.warm()).resolves.toBeUndefined();
    expect(cold.keySetState()).toBe("unavailable");
  });
});
