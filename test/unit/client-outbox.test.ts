/**
 * The SDK's outbox on its own: what goes out on which connection, the pace of
 * the token bucket the gateway also uses, and what each refusal does to a
 * queued message (docs/protocol.md §5a, §8.2). A clock the test moves; no sockets.
 */
import { describe, expect, it } from "vitest";
import { assertFits, chatFrame, createOutbox } from "../../service/client/outbox.js";
import type { ChatMessageFrame } from "../../service/client/types.js";
import { parseClientFrame } from "../../service/src/realtime/frames.js";
import { MAX_ID_LENGTH, refillBucket } from "../../service/src/protocol.js";

function setup(perSecond = 10, retryDelayMs = 1500) {
  const clock = { now: 0 };
  const outbox = createOutbox({ now: () => clock.now, perSecond, retryDelay: () => retryDelayMs });
  const sent: string[] = [];
  const send = (frame: ChatMessageFrame) => (sent.push(frame.message_id), true);
  const queue = (...ids: string[]) => ids.forEach((id) => outbox.add(chatFrame({ text: `text of ${id}`, threadId: "t", messageId: id })));
  return { clock, outbox, sent, send, queue };
}

describe("the outbox", () => {
  it("sends each message once per connection, in order, and again on the next connection until acked", () => {
    const { outbox, sent, send, queue } = setup();
    queue("a", "b", "c");
    expect(outbox.pump(1, send)).toBeUndefined();
    expect(outbox.pump(1, send)).toBeUndefined();
    expect(sent).toEqual(["a", "b", "c"]);
    expect(outbox.ack("b")?.thread_id).toBe("t");
    expect(outbox.ack("b")).toBeUndefined(); // a second ack of the same id is nothing
    expect(outbox.ids()).toEqual(["a", "c"]);
    sent.length = 0;
    outbox.pump(2, send);
    expect(sent).toEqual(["a", "c"]);
  });

  it("keeps a message unsent when the socket could not take it, and sends it on the next pump", () => {
    const { outbox, sent, send, queue } = setup();
    queue("a");
    expect(outbox.pump(1, () => false)).toBeUndefined();
    outbox.pump(1, send);
    expect(sent).toEqual(["a"]);
  });

  it("paces a long outbox with the gateway's bucket: a burst of two seconds' worth, then the rate", () => {
    const { clock, outbox, sent, send, queue } = setup(10);
    clock.now = 60_000;
    queue(...Array.from({ length: 25 }, (_, i) => `m${i}`));
    expect(outbox.pump(1, send)).toBe(100); // the burst is spent; one more token in 100 ms
    expect(sent).toHaveLength(20);
    clock.now += 100;
    expect(outbox.pump(1, send)).toBe(100);
    expect(sent).toHaveLength(21);
    clock.now += 1000;
    expect(outbox.pump(1, send)).toBeUndefined();
    expect(sent).toHaveLength(25);
  });

  it("drops a message the backend refused for good, and holds one it could not take for the retry delay", () => {
    const { clock, outbox, sent, send, queue } = setup(10, 1500);
    queue("rejected", "unavailable", "busy");
    outbox.pump(1, send);
    expect(outbox.refuse("rejected", "MESSAGE_REJECTED")).toBe("dropped");
    expect(outbox.refuse("unavailable", "AGENT_UNAVAILABLE")).toBe("resend");
    expect(outbox.refuse("busy", "INTERNAL_ERROR")).toBeUndefined(); // not an outbox answer: stays sent
    expect(outbox.refuse("nobody", "CHAT_UNAVAILABLE")).toBeUndefined();
    expect(outbox.refuse(undefined, "RATE_LIMITED")).toBeUndefined();
    expect(outbox.ids()).toEqual(["unavailable", "busy"]);
    sent.length = 0;
    expect(outbox.pump(1, send)).toBe(1500);
    expect(sent).toEqual([]);
    clock.now += 1500;
    expect(outbox.pump(1, send)).toBeUndefined();
    expect(sent).toEqual(["unavailable"]);
  });

  it("treats CHAT_UNAVAILABLE as final and RATE_LIMITED and TICKET_STORE_UNAVAILABLE as 'send again'", () => {
    const { outbox, send, queue } = setup();
    queue("x", "y", "z");
    outbox.pump(1, send);
    expect(outbox.refuse("x", "CHAT_UNAVAILABLE")).toBe("dropped");
    expect(outbox.refuse("y", "RATE_LIMITED")).toBe("resend");
    expect(outbox.refuse("z", "TICKET_STORE_UNAVAILABLE")).toBe("resend");
  });
});

describe("a chat message's checks, shared with the gateway", () => {
  it("accepts ids of MAX_ID_LENGTH characters and refuses longer ones, as the gateway's frame parser does", () => {
    const longest = "i".repeat(MAX_ID_LENGTH);
    const frame = chatFrame({ text: "hi", threadId: longest, messageId: longest });
    expect(parseClientFrame(JSON.stringify(frame))).toEqual(frame);
    const tooLong = `${longest}i`;
    expect(() => chatFrame({ text: "hi", threadId: tooLong })).toThrow(/threadId must be a string of 1 to 128/);
    expect(() => chatFrame({ text: "hi", threadId: "t", messageId: tooLong })).toThrow(TypeError);
    expect(parseClientFrame(JSON.stringify({ ...frame, thread_id: tooLong }))).toMatchObject({ error: "MESSAGE_INVALID" });
    expect(() => chatFrame({ text: "  ", threadId: "t" })).toThrow(/text must be a non-empty string/);
  });

  it("gives a message without an id a UUID", () => {
    expect(chatFrame({ text: "hi", threadId: "t" }).message_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it("refuses a frame over the gateway's size limit, counting UTF-8 bytes", () => {
    const frame = chatFrame({ text: "é".repeat(100), threadId: "t", messageId: "m" });
    const bytes = new TextEncoder().encode(JSON.stringify(frame)).length;
    expect(() => assertFits(frame, bytes)).not.toThrow();
    expect(() => assertFits(frame, bytes - 1)).toThrow(new RangeError(`GatewayClient.send: the message is ${bytes} bytes; the gateway accepts at most ${bytes - 1}`));
  });

  it("refills the bucket at the rate, up to two seconds' worth", () => {
    expect(refillBucket(0, 500, 10)).toBe(5);
    expect(refillBucket(19, 60_000, 10)).toBe(20);
    expect(refillBucket(-3, 100, 50)).toBe(2);
  });
});
