/**
 * The ShardedBus state machine against a fake topology of in-process nodes:
 * no Redis, so every transition (subscribe, node loss, slot move, failover,
 * MOVED) is driven by hand and checked in milliseconds. The same bus over
 * real Redis and a real cluster is covered by test/integration/cluster-*.
 */
import { EventEmitter } from "node:events";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ShardedBus } from "../../service/src/plugins/store/shardedBus.js";
import type { BusConnection, Topology } from "../../service/src/plugins/store/topology.js";
import { StoreUnavailableError, type BusMessage } from "../../service/src/plugins/store/types.js";

/** One subscriber connection to a fake node: it becomes ready on a later turn, like ioredis. */
class FakeConnection extends EventEmitter implements BusConnection {
  status = "connecting";
  readonly subscribed = new Set<string>();
  readonly ssubscribeCalls: string[][] = [];
  /** When set, the next SSUBSCRIBE fails with this reply. */
  failNext: string | undefined;

  constructor(readonly node: string) {
    super();
    setImmediate(() => this.becomeReady());
  }
  becomeReady(): void {
    this.status = "ready";
    this.emit("ready");
  }
  /** The socket dropped: the node forgot our subscriptions; ioredis reconnects. */
  drop(): void {
    this.status = "reconnecting";
    this.subscribed.clear();
    this.emit("close");
  }
  async ssubscribe(...channels: string[]): Promise<unknown> {
    this.ssubscribeCalls.push(channels);
    if (this.failNext !== undefined) {
      const reply = this.failNext;
      this.failNext = undefined;
      throw new Error(reply);
    }
    for (const channel of channels) this.subscribed.add(channel);
    return channels.length;
  }
  async sunsubscribe(...channels: string[]): Promise<unknown> {
    for (const channel of channels) this.subscribed.delete(channel);
    return 0;
  }
  async ping(): Promise<unknown> {
    return "PONG";
  }
  async quit(): Promise<unknown> {
    this.status = "end";
    return "OK";
  }
  disconnect(): void {
    this.status = "end";
    this.subscribed.clear();
    this.emit("end");
  }
  /** SPUBLISH as the node would deliver it: only to a subscribed channel. */
  publish(channel: string, message: string): void {
    if (this.status === "ready" && this.subscribed.has(channel)) this.emit("smessage", channel, message);
  }
}

/** A cluster map held by the test: channel → node, `primaries` the nodes that serve slots. */
class FakeTopology implements Topology {
  readonly clustered = true;
  primaries: string[];
  readonly owner = new Map<string, string>();
  readonly opened: FakeConnection[] = [];
  refreshes = 0;
  private readonly handlers: (() => void)[] = [];

  constructor(primaries: string[]) {
    this.primaries = primaries;
  }
  nodeOf(channel: string): string | undefined {
    return this.primaries.length === 0 ? undefined : (this.owner.get(channel) ?? this.primaries[0]);
  }
  nodes(): string[] {
    return [...this.primaries];
  }
  connect(node: string): FakeConnection {
    const conn = new FakeConnection(node);
    this.opened.push(conn);
    return conn;
  }
  batches(channels: string[]): string[][] {
    return channels.map((channel) => [channel]);
  }
  refresh(): void {
    this.refreshes++;
  }
  async refreshed(): Promise<void> {
    this.refreshes++;
  }
  async mapReady(): Promise<void> {}
  onChange(handler: () => void): void {
    this.handlers.push(handler);
  }
  /** A new map arrived (what ioredis' "refresh" event reports). */
  changed(): void {
    for (const handler of this.handlers) handler();
  }
  /** The open connection to the node (the newest one). */
  conn(node: string): FakeConnection {
    const conn = this.opened.filter((c) => c.node === node).at(-1);
    if (conn === undefined) throw new Error(`no connection to ${node}`);
    return conn;
  }
}

const quiet = { warn() {}, info() {} };
const buses: ShardedBus[] = [];

function setup(primaries = ["a:1", "b:2"]) {
  const topology = new FakeTopology(primaries);
  const bus = new ShardedBus({ topology, timeoutMs: 1000, logger: quiet, repairMs: 10, watchdogMs: 60_000 });
  buses.push(bus);
  const messages: BusMessage[] = [];
  const status: boolean[] = [];
  bus.onMessage((m) => messages.push(m));
  bus.onStatus((up) => status.push(up));
  return { topology, bus, messages, status };
}
const userRoute = (userId: string) => ({ kind: "user", userId }) as const;
const settle = (check: () => void) => vi.waitFor(check, { timeout: 5000, interval: 5 });

afterEach(async () => {
  await Promise.all(buses.splice(0).map((bus) => bus.close()));
});

describe("ShardedBus", () => {
  it("opens one connection per primary and subscribes each channel on the node that serves it", async () => {
    const { topology, bus, messages } = setup();
    topology.owner.set("ch-b", "b:2");
    await bus.subscribe("ch-a", userRoute("alice"));
    await bus.subscribe("ch-b", userRoute("bob"));
    expect(topology.opened.map((c) => c.node).sort()).toEqual(["a:1", "b:2"]);
    expect([...topology.conn("a:1").subscribed]).toEqual(["ch-a"]);
    expect([...topology.conn("b:2").subscribed]).toEqual(["ch-b"]);

    topology.conn("b:2").publish("ch-b", "7 ep-1 {\"x\":1}");
    topology.conn("a:1").publish("ch-a", "c revoke");
    expect(messages).toEqual([
      { kind: "event", userId: "bob", epoch: "ep-1", event: { seq: 7, body: "{\"x\":1}" } },
      { kind: "user_control", userId: "alice", payload: "revoke" },
    ]);
  });

  it("counts subscribers: the channel is released only by the last unsubscribe, and then nothing more is delivered", async () => {
    const { topology, bus, messages } = setup(["a:1"]);
    await bus.subscribe("ch", userRoute("u"));
    await bus.subscribe("ch", userRoute("u"));
    await bus.unsubscribe("ch");
    expect(topology.conn("a:1").subscribed.has("ch")).toBe(true);
    await bus.unsubscribe("ch");
    expect(topology.conn("a:1").subscribed.has("ch")).toBe(false);
    topology.conn("a:1").emit("smessage", "ch", "1 e body"); // a message already in flight
    expect(messages).toEqual([]);
  });

  it("drops a message that is not a bus frame and keeps delivering; a throwing handler does not stop the others", async () => {
    const warned: string[] = [];
    const topology = new FakeTopology(["a:1"]);
    const bus = new ShardedBus({ topology, timeoutMs: 1000, logger: { warn: (_o, msg) => warned.push(msg), info() {} } });
    buses.push(bus);
    const got: BusMessage[] = [];
    bus.onMessage(() => {
      throw new Error("handler bug");
    });
    bus.onMessage((m) => got.push(m));
    await bus.subscribe("ch", userRoute("u"));
    topology.conn("a:1").publish("ch", "not-a-seq epoch body");
    topology.conn("a:1").publish("ch", "garbage");
    topology.conn("a:1").publish("ch", "2 e {}");
    expect(got).toEqual([{ kind: "event", userId: "u", epoch: "e", event: { seq: 2, body: "{}" } }]);
    expect(warned).toEqual(["bus handler threw"]);
  });

  it("node loss: reports the bus down when a connection drops, and up once the reconnected node has every channel again", async () => {
    const { topology, bus, status } = setup();
    topology.owner.set("ch-b", "b:2");
    await bus.subscribe("ch-a1", userRoute("a1"));
    await bus.subscribe("ch-a2", userRoute("a2"));
    await bus.subscribe("ch-b", userRoute("b"));
    const a = topology.conn("a:1");
    a.drop();
    expect(bus.up).toBe(false);
    expect(status).toEqual([false]);
    a.becomeReady();
    await settle(() => expect(status).toEqual([false, true]));
    expect([...a.subscribed].sort()).toEqual(["ch-a1", "ch-a2"]);
    expect(bus.up).toBe(true);
    expect([...topology.conn("b:2").subscribed]).toEqual(["ch-b"]); // the other node was left alone
  });

  it("stays down while a node cannot resubscribe: the failed connection is dropped for a fresh one", async () => {
    const { topology, bus, status } = setup(["a:1"]);
    await bus.subscribe("ch", userRoute("u"));
    const a = topology.conn("a:1");
    const disconnect = vi.spyOn(a, "disconnect").mockImplementation(() => a.drop());
    a.drop();
    a.failNext = "ERR something broke";
    a.becomeReady();
    await settle(() => expect(disconnect).toHaveBeenCalledWith(true));
    expect(bus.up).toBe(false);
    a.becomeReady(); // ioredis reconnected
    await settle(() => expect(status).toEqual([false, true]));
    expect(a.subscribed.has("ch")).toBe(true);
  });

  it("slot move: a channel whose slot moved is reported lost, subscribed on its new node, and delivered from there", async () => {
    const { topology, bus, status, messages } = setup();
    await bus.subscribe("ch", userRoute("u"));
    topology.owner.set("ch", "b:2");
    topology.changed();
    expect(status).toEqual([false]); // published on b since the move, never heard on a
    await settle(() => expect(status).toEqual([false, true]));
    expect(topology.conn("b:2").subscribed.has("ch")).toBe(true);
    topology.conn("b:2").publish("ch", "5 e moved");
    expect(messages.at(-1)).toEqual({ kind: "event", userId: "u", epoch: "e", event: { seq: 5, body: "moved" } });
  });

  it("failover: a primary that left the map is disconnected and its channels resync on the promoted node", async () => {
    const { topology, bus, status } = setup(["a:1", "b:2"]);
    topology.owner.set("ch", "a:1");
    await bus.subscribe("ch", userRoute("u"));
    const old = topology.conn("a:1");
    topology.primaries = ["c:3", "b:2"];
    topology.owner.set("ch", "c:3");
    topology.changed();
    expect(old.status).toBe("end");
    await settle(() => expect(status).toEqual([false, true]));
    expect(topology.conn("c:3").subscribed.has("ch")).toBe(true);
  });

  it("the repair loop re-reads the map while a shard is out of date", async () => {
    const { topology, bus } = setup(["a:1"]);
    await bus.subscribe("ch", userRoute("u"));
    topology.conn("a:1").drop();
    const before = topology.refreshes;
    await settle(() => expect(topology.refreshes).toBeGreaterThan(before));
  });

  it("a subscribe that meets MOVED reads the map again and subscribes on the new node", async () => {
    const { topology, bus } = setup();
    await bus.subscribe("warm", userRoute("w")); // both connections ready
    topology.conn("a:1").failNext = "MOVED 1234 b:2";
    const pending = bus.subscribe("ch", userRoute("u"));
    topology.owner.set("ch", "b:2"); // the map the refresh will find
    await pending;
    expect(topology.conn("b:2").subscribed.has("ch")).toBe(true);
    expect(topology.conn("a:1").subscribed.has("ch")).toBe(false);
    expect(topology.conn("a:1").ssubscribeCalls).toContainEqual(["ch"]); // tried there first, and told MOVED
  });

  it("refuses to subscribe once closed, and closes every connection", async () => {
    const { topology, bus } = setup();
    await bus.subscribe("ch", userRoute("u"));
    await bus.close();
    expect(topology.opened.every((c) => c.status === "end")).toBe(true);
    await expect(bus.subscribe("other", userRoute("v"))).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});
