/**
 * Key naming and hash slots without Redis (test/integration/cluster-keyslots
 * checks the same against a real cluster's CLUSTER KEYSLOT).
 */
import { describe, expect, it } from "vitest";
import { encodeId, hashSlot, redisKeys } from "../../service/src/plugins/store/keys.js";

describe("store keys", () => {
  it("computes the slots Redis documents for CLUSTER KEYSLOT", () => {
    expect(hashSlot("somekey")).toBe(11058);
    expect(hashSlot("foo{hash_tag}")).toBe(2515);
    expect(hashSlot("foo")).toBe(12182);
  });

  it("hashes only the first non-empty hash tag", () => {
    expect(hashSlot("a{user1000}.following")).toBe(hashSlot("user1000"));
    expect(hashSlot("foo{{bar}}zap")).toBe(hashSlot("{bar"));
    expect(hashSlot("foo{}{bar}")).not.toBe(hashSlot("bar")); // an empty tag: the whole key is hashed
  });

  it("puts every key of a user in the user's slot, whatever the id holds", () => {
    for (const id of ["u", "a}b{c", "x:y", "\u{1F600}", "\ud800", "%75"]) {
      const keys = [redisKeys.seq(id), redisKeys.history(id), redisKeys.userChannel(id), redisKeys.messageClaims(id)];
      expect(new Set(keys.map(hashSlot)).size, id).toBe(1);
      expect(encodeId(id)).toMatch(/^[A-Za-z0-9._~%-]+$/);
    }
    expect(encodeId("%75")).not.toBe(encodeId("u"));
  });
});
