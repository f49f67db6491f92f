/**
 * The one framing of bus messages (service/src/plugins/store/codec.ts). The
 * event frame is built in Lua by the publish scripts: the last test checks
 * the scripts still build exactly what the codec reads.
 */
import { describe, expect, it } from "vitest";
import { decodeBusMessage, encodeEventFrame, encodeUserControl, eventTimestamp } from "../../service/src/plugins/store/codec.js";
import { newEpoch } from "../../service/src/plugins/store/rules.js";
import { SCRIPTS } from "../../service/src/plugins/store/scripts.js";

const user = { kind: "user", userId: "u1" } as const;

describe("bus codec", () => {
  it("round-trips an event whose body has spaces, and a control payload that looks like an event", () => {
    const body = JSON.stringify({ type: "text", text: "a b  c", ts: "2026-01-01T00:00:00.000Z" });
    expect(decodeBusMessage(user, encodeEventFrame(42, "ep-x", body))).toEqual({
      kind: "event",
      userId: "u1",
      epoch: "ep-x",
      event: { seq: 42, body },
    });
    expect(decodeBusMessage(user, encodeUserControl("1 e not an event"))).toEqual({ kind: "user_control", userId: "u1", payload: "1 e not an event" });
  });

  it("takes an instance channel's message as its payload, whatever it looks like", () => {
    expect(decodeBusMessage({ kind: "instance" }, "c 7 e x")).toEqual({ kind: "instance_control", payload: "c 7 e x" });
  });

  it("drops what is not a frame instead of throwing: no seq, a seq that is not an integer, no body separator", () => {
    for (const hostile of ["", " ", "garbage", "12", "12 epoch", "x epoch body", "1.5 e b", "1e400 e b", "-", " 1 e b"]) {
      expect(decodeBusMessage(user, hostile), JSON.stringify(hostile)).toBeUndefined();
    }
  });

  it("an epoch never holds a space, so the frame's second space always ends it", () => {
    for (let i = 0; i < 50; i++) expect(newEpoch()).toMatch(/^[0-9a-z]+-[0-9a-f]{12}$/);
  });

  it("reads the ts of an event body without parsing it, and '' when there is none", () => {
    expect(eventTimestamp('{"type":"x","ts":"2026-05-01T10:00:00.000Z","data":{}}')).toBe("2026-05-01T10:00:00.000Z");
    expect(eventTimestamp('{"type":"x"}')).toBe("");
    expect(Number.isNaN(Date.parse(eventTimestamp('{"ts":"not a date"}')))).toBe(true);
  });

  it("the publish scripts build the same frame as encodeEventFrame: `<seq> <epoch> <body>`", () => {
    for (const name of ["gwPublish", "gwPublishMany"] as const) {
      expect(SCRIPTS[name].lua).toMatch(/redis\.call\('SPUBLISH', KEYS\[3\], n \.\. ' ' \.\. epoch \.\. ' ' \.\. ARGV\[\d( \+ i)?\]\)/);
    }
    expect(encodeEventFrame(1, "e", "b")).toBe("1 e b");
  });
});
