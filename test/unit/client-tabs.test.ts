/**
 * One socket per browser (service/client/tabs): election, relaying and
 * handover, with every tab in one process. Time, the BroadcastChannel and the
 * Web Locks manager are fakes with the browser's semantics (client-tabs-fakes.ts);
 * each tab's GatewayClient is the real one, over a socket the test answers as
 * the gateway would. The same scenarios against a real gateway are in
 * test/integration/client-tabs.test.ts and, in Chromium, test/e2e/tabs.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SharedGatewayClient, type LifecycleTarget } from "../../service/client/tabs/SharedGatewayClient.js";
import type { AckEvent, AgentEvent, ClientError, StateChange } from "../../service/client/types.js";
import { ChannelHub, Clock, FakeSocket, LockHub, Tab, ticketFetch } from "./client-tabs-fakes.js";

let clock: Clock;
let hub: ChannelHub;
let locks: LockHub;
const tabs: TabUnderTest[] = [];

interface TabUnderTest {
  readonly tab: Tab;
  readonly client: SharedGatewayClient;
  readonly seqs: number[];
  readonly acks: AckEvent[];
  readonly errors: ClientError[];
  readonly states: StateChange[];
  readonly sockets: FakeSocket[];
}

beforeEach(() => {
  clock = new Clock();
  hub = new ChannelHub(clock);
  locks = new LockHub();
  FakeSocket.all = [];
});
afterEach(() => {
  for (const t of tabs.splice(0)) if (!t.tab.dead) t.client.close();
});

function openTab(
  name: string,
  options: { webLocks?: boolean; lastSeq?: number; epoch?: string; random?: () => number; lifecycle?: LifecycleTarget } = {},
): TabUnderTest {
  const tab = new Tab(name);
  const sockets: FakeSocket[] = [];
  const client = new SharedGatewayClient({
    url: "https://gw.test",
    getToken: async () => "user-token",
    WebSocket: class extends FakeSocket {
      constructor(url: string) {
        super(url);
        sockets.push(this);
      }
    },
    fetch: ticketFetch,
    window: null,
    timers: clock.timersFor(tab),
    now: () => clock.now,
    // By default every tab draws the same stagger: the worst case, tabs taking over at the same moment.
    random: options.random ?? (() => 0.5),
    lastSeq: options.lastSeq,
    epoch: options.epoch,
    share: { key: "alice", BroadcastChannel: hub.classFor(tab), locks: options.webLocks === false ? null : locks.managerFor(tab), lifecycle: options.lifecycle ?? null },
  });
  const t: TabUnderTest = { tab, client, seqs: [], acks: [], errors: [], states: [], sockets };
  client.on("event", (e: AgentEvent) => t.seqs.push(e.seq));
  client.on("ack", (a) => t.acks.push(a));
  client.on("error", (e) => t.errors.push(e));
  client.on("state", (s) => t.states.push(s));
  client.connect();
  tabs.push(t);
  return t;
}

/** The tab's current socket (the leader's), once it asked for a ticket and opened it. */
function socketOf(t: TabUnderTest): FakeSocket {
  const open = t.sockets.filter((s) => !s.closed);
  expect(open).toHaveLength(1);
  return open[0]!;
}

const leaders = (list: TabUnderTest[]) => list.filter((t) => t.client.isLeader).map((t) => t.tab.name);
const openSockets = () => FakeSocket.all.filter((s) => !s.closed).length;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Fake milliseconds until one of `candidates` opens a socket (the takeover time), up to 5 s. */
async function untilNewSocket(candidates: TabUnderTest[]): Promise<number> {
  const since = clock.now;
  while (!candidates.some((t) => t.sockets.length > 0)) {
    if (clock.now - since > 5000) throw new Error(`no takeover within 5 s; last messages: ${JSON.stringify(hub.posted.slice(-10))}`);
    await clock.advance(10);
  }
  return clock.now - since;
}

/** The browser closes a tab: no goodbye, its locks released, its channel gone. */
function kill(t: TabUnderTest): void {
  t.tab.dead = true;
  clock.dropTimersOf(t.tab);
  locks.tabGone(t.tab);
  (t.client as unknown as { channel?: { close(): void } }).channel?.close();
}

describe.each([
  { election: "Web Locks", webLocks: true },
  { election: "heartbeats and claims (no Web Locks)", webLocks: false },
])("tabs sharing one socket, elected by $election", ({ webLocks }) => {
  it("elects one leader that holds the only socket; every tab gets every event once, in order", async () => {
    const group = ["a", "b", "c"].map((n) => openTab(n, { webLocks }));
    await clock.advance(2000);
    expect(leaders(group)).toHaveLength(1);
    expect(openSockets()).toBe(1);
    const leader = group.find((t) => t.client.isLeader)!;
    socketOf(leader).establish(10);
    await clock.advance(50);
    expect(group.map((t) => t.client.state)).toEqual(["open", "open", "open"]);
    for (const seq of [11, 12, 13]) socketOf(leader).event(seq);
    socketOf(leader).event(12); // the gateway's duplicate: dropped by the leader's client
    await clock.advance(50);
    for (const t of group) expect(t.seqs).toEqual([11, 12, 13]);
    // Two more heartbeats' worth of time changes nothing: no second leader, no second socket.
    await clock.advance(5000);
    expect(leaders(group)).toHaveLength(1);
    expect(openSockets()).toBe(1);
  });

  it("a tab's message is sent by the leader and acked to that tab only", async () => {
    const group = ["a", "b", "c"].map((n) => openTab(n, { webLocks }));
    await clock.advance(2000);
    const leader = group.find((t) => t.client.isLeader)!;
    const follower = group.find((t) => !t.client.isLeader)!;
    socketOf(leader).establish(0);
    await clock.advance(50);
    const id = follower.client.send("hello from a follower", { threadId: "t-1" });
    expect(follower.client.pendingMessageIds).toEqual([id]);
    await clock.advance(50);
    expect(socketOf(leader).sent.filter((f) => f.type === "chat_message")).toEqual([{ type: "chat_message", message_id: id, thread_id: "t-1", text: "hello from a follower" }]);
    socketOf(leader).frame({ type: "ack", message_id: id });
    await clock.advance(50);
    expect(follower.acks).toEqual([{ messageId: id, threadId: "t-1" }]);
    expect(follower.client.pendingMessageIds).toEqual([]);
    for (const t of group.filter((t) => t !== follower)) expect(t.acks).toEqual([]);
  });

  it("when the leader's tab closes, another leads, resumes from the tabs' position and resends unacked messages: no hole, no duplicate", async () => {
    const group = ["a", "b", "c"].map((n) => openTab(n, { webLocks }));
    await clock.advance(2000);
    const first = group.find((t) => t.client.isLeader)!;
    socketOf(first).establish(0);
    await clock.advance(50);
    for (const seq of [1, 2, 3]) socketOf(first).event(seq);
    const follower = group.find((t) => t !== first)!;
    const id = follower.client.send("not acked before the leader went", { threadId: "t-2" });
    await clock.advance(50);

    kill(first);
    const rest = group.filter((t) => t !== first);
    // Web Locks hands the lock on at once; without, the silence must last leaderTimeoutMs (1.2 s).
    expect(await untilNewSocket(rest)).toBeLessThanOrEqual(webLocks ? 300 : 2000);
    expect(leaders(rest)).toHaveLength(1);
    const second = rest.find((t) => t.client.isLeader)!;
    const socket = socketOf(second);
    socket.establish(5);
    await clock.advance(10);
    // It resumes from seq 3, the position every remaining tab has.
    expect(socket.sent.find((f) => f.type === "resume")).toEqual({ type: "resume", last_seq: 3, epoch: "e1" });
    for (const seq of [4, 5]) socket.event(seq);
    socket.frame({ type: "resume_complete", replayed: 2 });
    socket.event(6);
    await clock.advance(50);
    for (const t of rest) expect(t.seqs).toEqual(range(1, 6));
    expect(socket.sent.filter((f) => f.type === "chat_message").map((f) => f.message_id)).toEqual([id]);
  });

  it("a leader closed by its app says so: another tab takes over at once, without waiting for its silence", async () => {
    const group = ["a", "b", "c"].map((n) => openTab(n, { webLocks }));
    await clock.advance(2000);
    const first = group.find((t) => t.client.isLeader)!;
    socketOf(first).establish(0);
    await clock.advance(50);
    first.client.close();
    expect(first.client.state).toBe("closed");
    expect(first.sockets.every((s) => s.closed)).toBe(true);
    const rest = group.filter((t) => t !== first);
    expect(await untilNewSocket(rest)).toBeLessThanOrEqual(webLocks ? 300 : 700);
    await clock.advance(2000);
    expect(leaders(rest)).toHaveLength(1);
  });

  it("a frozen leader is replaced within 2 s; thawed, it steps down and closes its socket", async () => {
    const group = ["a", "b", "c"].map((n) => openTab(n, { webLocks }));
    await clock.advance(2000);
    const first = group.find((t) => t.client.isLeader)!;
    socketOf(first).establish(0);
    await clock.advance(50);
    socketOf(first).event(1);
    await clock.advance(50);

    first.tab.frozen = true;
    const rest = group.filter((t) => t !== first);
    expect(await untilNewSocket(rest)).toBeLessThanOrEqual(2000);
    expect(leaders(rest)).toHaveLength(1);
    const second = rest.find((t) => t.client.isLeader)!;
    socketOf(second).establish(1);
    await clock.advance(10);
    expect(socketOf(second).sent.find((f) => f.type === "resume")).toMatchObject({ last_seq: 1 });
    socketOf(second).event(2);

    first.tab.frozen = false;
    await clock.advance(1000);
    expect(first.client.isLeader).toBe(false);
    expect(first.sockets.every((s) => s.closed)).toBe(true);
    expect(leaders(group)).toEqual([second.tab.name]);
    socketOf(second).event(3);
    await clock.advance(50);
    for (const t of group) expect(t.seqs).toEqual([1, 2, 3]);
  });
});

/** A small deterministic generator, so a failing schedule can be replayed from its seed. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

describe.each([
  { election: "Web Locks", webLocks: true },
  { election: "heartbeats and claims", webLocks: false },
])("random schedules ($election): slow channel, tabs opening at random, leaders closed or hung at random", ({ webLocks }) => {
  it.each(Array.from({ length: 20 }, (_, i) => i + 1))("seed %i: always exactly one leader and one socket, and no tab misses an event", async (seed) => {
    const draw = seeded(seed);
    const latency = seeded(seed * 7);
    hub = new ChannelHub(clock, () => Math.floor(latency() * 60));
    const group: TabUnderTest[] = [];
    for (const name of ["a", "b", "c", "d", "e"]) {
      group.push(openTab(name, { webLocks, random: seeded(seed * 100 + name.charCodeAt(0)) }));
      await clock.advance(Math.floor(draw() * 300));
    }
    let seq = 0;
    const live = () => group.filter((t) => !t.tab.dead);
    const openSocket = () => live().flatMap((t) => t.sockets.filter((s) => !s.closed));
    for (let round = 0; round < 4; round++) {
      await clock.advance(4000);
      expect(live().filter((t) => t.client.isLeader), `round ${round}`).toHaveLength(1);
      expect(openSocket(), `round ${round}`).toHaveLength(1);
      const socket = openSocket()[0]!;
      if (socket.readyState !== 1) socket.establish(seq);
      await clock.advance(50);
      socket.frame({ type: "resume_complete", replayed: 0 });
      socket.event(++seq);
      await clock.advance(200);
      for (const t of live()) expect(t.seqs.at(-1), `tab ${t.tab.name}, round ${round}`).toBe(seq);
      const leader = live().find((t) => t.client.isLeader)!;
      if (draw() < 0.5) kill(leader);
      else {
        leader.tab.frozen = true;
        await clock.advance(3000);
        leader.tab.frozen = false;
      }
    }
    for (const t of live()) expect(t.seqs, `tab ${t.tab.name}`).toEqual(range(t.seqs[0]!, seq));
  });
});

describe("the page's lifecycle", () => {
  it.each(["freeze", "pagehide"] as const)("a leader's %s hands the socket on at once (without Web Locks too)", async (type) => {
    const page = new EventTarget();
    const a = openTab("a", { webLocks: false, lifecycle: page as unknown as LifecycleTarget });
    await clock.advance(1000);
    expect(a.client.isLeader).toBe(true);
    const b = openTab("b", { webLocks: false });
    await clock.advance(1000);
    page.dispatchEvent(new Event(type));
    expect(a.client.isLeader).toBe(false);
    expect(a.sockets.every((s) => s.closed)).toBe(true);
    expect(await untilNewSocket([b])).toBeLessThanOrEqual(700);
  });
});

describe("positions", () => {
  it("the first leader resumes from the lowest position any tab persisted; each tab gets only what it lacks", async () => {
    const a = openTab("a", { lastSeq: 7, epoch: "e1" });
    const b = openTab("b", { lastSeq: 4, epoch: "e1" });
    const c = openTab("c", { lastSeq: 9, epoch: "e1" });
    await clock.advance(2000);
    const socket = socketOf([a, b, c].find((t) => t.client.isLeader)!);
    socket.establish(9);
    await clock.advance(10);
    expect(socket.sent.find((f) => f.type === "resume")).toEqual({ type: "resume", last_seq: 4, epoch: "e1" });
    for (const seq of range(5, 10)) socket.event(seq);
    await clock.advance(50);
    expect(a.seqs).toEqual([8, 9, 10]);
    expect(b.seqs).toEqual(range(5, 10));
    expect(c.seqs).toEqual([10]);
  });

  it("a tab that joins behind the leader makes it resume from the joiner's position", async () => {
    const a = openTab("a");
    await clock.advance(500);
    socketOf(a).establish(20);
    await clock.advance(10);
    socketOf(a).event(21);
    await clock.advance(10);
    const late = openTab("late", { lastSeq: 18, epoch: "e1" });
    await clock.advance(500);
    const socket = socketOf(a);
    expect(socket).not.toBe(a.sockets[0]);
    socket.establish(21);
    await clock.advance(10);
    expect(socket.sent.find((f) => f.type === "resume")).toEqual({ type: "resume", last_seq: 18, epoch: "e1" });
    for (const seq of [19, 20, 21, 22]) socket.event(seq);
    await clock.advance(50);
    expect(a.seqs).toEqual([21, 22]);
    expect(late.seqs).toEqual([19, 20, 21, 22]);
  });
});

describe("a connection the gateway ended for good", () => {
  it("tells every tab why it closed; a tab that joins later makes the leader try once more", async () => {
    const a = openTab("a");
    const b = openTab("b");
    await clock.advance(1000);
    const first = socketOf(a);
    first.establish(0);
    await clock.advance(10);
    first.frame({ type: "error", code: "SESSION_REVOKED", message: "revoked", fatal: true });
    first.onclose?.({ code: 4501, reason: "SESSION_REVOKED" });
    await clock.advance(50);
    for (const t of [a, b]) expect([t.client.state, t.states.at(-1)?.errorCode]).toEqual(["closed", "SESSION_REVOKED"]);
    expect(b.errors.map((e) => e.code)).toContain("SESSION_REVOKED");
    await clock.advance(5000);
    expect(a.sockets).toHaveLength(1); // it does not retry by itself
    openTab("c"); // e.g. the user signed in again in a new tab
    await clock.advance(500);
    expect(a.sockets).toHaveLength(2);
  });
});

describe("what other scripts post on the channel", () => {
  it("malformed messages are ignored, and a deposed term's events are dropped; the tabs keep working", async () => {
    const a = openTab("a");
    const b = openTab("b");
    await clock.advance(1000);
    const socket = socketOf(a);
    socket.establish(0);
    await clock.advance(10);
    const [name] = hub.namesOpen();
    const attacks: unknown[] = [
      null,
      "event",
      42,
      [],
      { k: "event" },
      { k: "event", from: "x", term: 99, event: { seq: "1", type: "agent_thinking" } },
      { k: "event", from: "x".repeat(500), term: 99, event: { seq: 1, type: "t" } },
      { k: "event", from: "x", term: -1, event: { seq: 1, type: "t" } },
      { k: "event", from: "x", term: 1.5, event: { seq: 1, type: "t" } },
      { k: "ack", from: "x", term: 1, ack: { messageId: {} } },
      { k: "state", from: "x", term: 1, change: { state: "exploded", errorCode: "X" }, pos: {} },
      { k: "send", from: "x", term: 1, message: { text: 1, threadId: "t", messageId: "m" } },
      { k: "__proto__", from: "x", term: 1 },
      { k: "toString", from: "x", term: 1 },
      // A well-formed event from a term lower than the leader's: a deposed leader's, dropped.
      { k: "event", from: "old", term: 0, event: { seq: 1, type: "agent_thinking", event_id: "e", run_id: "r", thread_id: "t", ts: "", data: {} } },
    ];
    for (const attack of attacks) hub.inject(name!, attack);
    await clock.advance(50);
    expect(b.seqs).toEqual([]);
    expect(b.client.state).toBe("open");
    socket.event(1);
    await clock.advance(50);
    expect([a.seqs, b.seqs]).toEqual([[1], [1]]);
    expect(a.client.isLeader).toBe(true);
  });

  it("tabs of another user (another share key) or another gateway do not share a socket", async () => {
    const a = openTab("a");
    const other = new Tab("other");
    const client = new SharedGatewayClient({
      url: "https://gw.test",
      getToken: async () => "bob-token",
      WebSocket: FakeSocket,
      fetch: ticketFetch,
      window: null,
      timers: clock.timersFor(other),
      now: () => clock.now,
      share: { key: "bob", BroadcastChannel: hub.classFor(other), locks: locks.managerFor(other), lifecycle: null },
    });
    client.connect();
    await clock.advance(2000);
    expect(hub.namesOpen()).toHaveLength(2);
    expect(a.client.isLeader).toBe(true);
    // Its own lock name too: "bob" leads his own group, not queued behind alice's leader.
    expect(client.isLeader).toBe(true);
    client.close();
  });
});
