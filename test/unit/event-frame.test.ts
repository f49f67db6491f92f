import { describe, expect, it } from "vitest";
import { eventFrame } from "../../service/src/realtime/events.js";

const body = (n: number) => JSON.stringify({ type: "agent_thinking", event_id: `e${n}`, run_id: "r", thread_id: "t", ts: "2026-01-01T00:00:00.000Z", data: { n } });

describe("eventFrame", () => {
  it("puts seq first and keeps the body's fields as they are", () => {
    const frame = eventFrame(7, body(1));
    expect(frame.startsWith('{"seq":7,"type":"agent_thinking"')).toBe(true);
    expect(JSON.parse(frame)).toEqual({ seq: 7, ...(JSON.parse(body(1)) as object) });
  });

  it("hands every socket of a fan-out the same string, built once", () => {
    const b = body(2);
    const first = eventFrame(8, b);
    expect(eventFrame(8, b)).toBe(first);
    expect(eventFrame(8, `${b}`)).toBe(first); // an equal body that is another string
  });

  it("never hands back a frame built from another seq or another body", () => {
    const b = body(3);
    expect(JSON.parse(eventFrame(9, b)).seq).toBe(9);
    expect(JSON.parse(eventFrame(10, b)).seq).toBe(10);
    const other = body(4);
    expect(JSON.parse(eventFrame(10, other))).toEqual({ seq: 10, ...(JSON.parse(other) as object) });
    expect(JSON.parse(eventFrame(10, b))).toEqual({ seq: 10, ...(JSON.parse(b) as object) });
  });
});
