import { describe, expect, it } from "vitest";
import { EventStream } from "../../service/client/stream.js";

const ev = (seq: number) => ({ seq });
const seqs = (events: Array<{ seq: number }>) => events.map((e) => e.seq);

describe("EventStream", () => {
  it("delivers in order from the baseline and drops what is at or below it", () => {
    const s = new EventStream();
    s.baseline(10, "e1");
    expect(s.accept(ev(9))).toEqual({ deliver: [], duplicate: true });
    expect(s.accept(ev(10)).duplicate).toBe(true);
    expect(seqs(s.accept(ev(11)).deliver)).toEqual([11]);
    expect(s.lastSeq).toBe(11);
  });

  it("buffers above a hole and hands everything over, in order, once it is filled", () => {
    const s = new EventStream(5, "e1");
    expect(s.accept(ev(8)).deliver).toEqual([]);
    expect(s.accept(ev(7)).deliver).toEqual([]);
    expect(s.holeOpen).toBe(true);
    expect(s.accept(ev(8)).duplicate).toBe(true); // buffered already
    expect(seqs(s.accept(ev(6)).deliver)).toEqual([6, 7, 8]);
    expect(s.holeOpen).toBe(false);
    expect(s.lastSeq).toBe(8);
    expect(s.accept(ev(7)).duplicate).toBe(true);
  });

  it("forgets the buffer on a new baseline (resync): those events belong to the old view", () => {
    const s = new EventStream(1, "e1");
    s.accept(ev(5));
    s.baseline(20, "e2");
    expect(s.holeOpen).toBe(false);
    expect(s.epoch).toBe("e2");
    expect(seqs(s.accept(ev(21)).deliver)).toEqual([21]);
  });

  it("without a baseline or a position, delivers nothing: there is nothing to order an event against", () => {
    const s = new EventStream();
    expect(s.hasState).toBe(false);
    expect(s.accept(ev(42)).deliver).toEqual([]);
    expect(s.hasState).toBe(false);
    s.baseline(41, "e1");
    expect(seqs(s.accept(ev(42)).deliver)).toEqual([42]);
  });

  it("adopts an epoch only when it has none", () => {
    const s = new EventStream(3);
    s.adoptEpoch("e1");
    s.adoptEpoch("e2");
    expect(s.epoch).toBe("e1");
  });
});
