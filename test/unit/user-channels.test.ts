import { afterEach, describe, expect, it } from "vitest";
import { createMemoryStore } from "../../service/src/plugins/store/memory.js";
import type { Connection } from "../../service/src/realtime/connection.js";
import { createUserChannels } from "../../service/src/realtime/userChannels.js";

// What a connection admitted while its user's channel was already heard
// learns from the bus instead of the store (userChannels.ts `missed`).
const store = createMemoryStore();
let channels: ReturnType<typeof createUserChannels> | undefined;
afterEach(() => channels?.close());

async function heard(now: () => number) {
  channels = createUserChannels({ store, now });
  await channels.join({ userId: "u1" } as Connection);
  return channels;
}

describe("a revoke heard on the user's channel", () => {
  it("refuses tickets issued at or before its time, and admits later ones", async () => {
    const c = await heard(() => 5_000);
    const after = c.generation;
    c.heardRevoke("u1", 1_000);
    const head = { latestSeq: 0, epoch: "e" };
    expect(c.missed("u1", after, head, 1_000)).toMatchObject({ known: true, revoked: true });
    expect(c.missed("u1", after, head, 1_001)).toMatchObject({ known: true, revoked: false });
  });

  // An older instance's revoke carries no time: read as when it was heard,
  // not as forever (which shut the user out of this instance while the channel lived).
  it("without a time (from an older instance): as of when it was heard, not forever", async () => {
    let now = 10_000;
    const c = await heard(() => now);
    const after = c.generation;
    c.heardRevoke("u1", undefined);
    now = 20_000;
    const head = { latestSeq: 0, epoch: "e" };
    expect(c.missed("u1", after, head, 9_000)).toMatchObject({ known: true, revoked: true });
    expect(c.missed("u1", after, head, 15_000)).toMatchObject({ known: true, revoked: false });
  });
});
