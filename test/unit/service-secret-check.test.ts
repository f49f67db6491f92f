import { describe, expect, it } from "vitest";
import { createSecretCheck } from "../../service/src/routes/serviceSecret.js";

const CURRENT = "current-secret-0123456789abcdef0123456789";
const PREVIOUS = "previous-secret-0123456789abcdef012345678";

describe("the internal API's service-secret check", () => {
  it("accepts the current and the previous secret, again and again, alternating (both cached)", () => {
    const check = createSecretCheck([CURRENT, PREVIOUS]);
    for (let i = 0; i < 3; i++) {
      expect(check(CURRENT)).toBe(true);
      expect(check(PREVIOUS)).toBe(true);
    }
  });

  it("refuses anything else, before and after the secrets were seen: same length, prefix, longer, empty", () => {
    const check = createSecretCheck([CURRENT, PREVIOUS]);
    const wrong = [`${CURRENT.slice(0, -1)}x`, CURRENT.slice(0, -1), `${CURRENT}x`, "", PREVIOUS.toUpperCase(), "current-secret"];
    for (const value of wrong) expect(check(value)).toBe(false);
    expect(check(CURRENT)).toBe(true);
    expect(check(PREVIOUS)).toBe(true);
    for (const value of wrong) expect(check(value)).toBe(false);
    // Many strangers in a row do not push the callers' values out, nor get in themselves.
    for (let i = 0; i < 50; i++) expect(check(`stranger-${i}`)).toBe(false);
    expect(check(CURRENT)).toBe(true);
  });

  it("without a previous secret, only the current one passes", () => {
    const check = createSecretCheck([CURRENT]);
    expect(check(CURRENT)).toBe(true);
    expect(check(PREVIOUS)).toBe(false);
  });

  it("a multi-byte value of the same length in characters is compared by bytes, not accepted", () => {
    const check = createSecretCheck([CURRENT]);
    expect(check(CURRENT)).toBe(true);
    expect(check(`${CURRENT.slice(0, -1)}é`)).toBe(false);
  });
});
