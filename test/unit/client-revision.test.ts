/**
 * The SDK speaks protocol revision 2 only (docs/protocol.md §8.1): a
 * connection_established without latest_seq, or a resync_required without
 * one, is not this protocol's frame and is not acted on (no baseline is
 * guessed from the first event, as for gateways older than §8.1). A fake
 * socket and fetch, injected timers; no gateway.
 */
import { describe, expect, it } from "vitest";
import { GatewayClient } from "../../service/client/GatewayClient.js";
import type { AgentEvent, StateChange, Timers, WebSocketLike } from "../../service/client/types.js";

function harness() {
  const sockets: FakeSocket[] = [];
  class FakeSocket implements WebSocketLike {
    readyState = 1;
    onopen = null;
    onmessage: WebSocketLike["onmessage"] = null;
    onclose: WebSocketLike["onclose"] = null;
    onerror = null;
    sent: unknown[] = [];
    constructor(readonly url: string) {
      sockets.push(this);
    }
    send(data: string): void {
      this.sent.push(JSON.parse(data));
    }
    close(): void {
      this.readyState = 3;
    }
    receive(frame: object): void {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
  }
  type Pending = { run: () => void; ms: number };
  const timers: Pending[] = [];
  const fakeTimers: Timers = {
    setTimeout: (run, ms) => {
      const timer = { run, ms };
      timers.push(timer);
      return timer;
    },
    clearTimeout: (t) => {
      const i = timers.indexOf(t as Pending);
      if (i >= 0) timers.splice(i, 1);
    },
  };
  const states: StateChange[] = [];
  const events: AgentEvent[] = [];
  const client = new GatewayClient({
    url: "https://gw.test",
    getToken: async () => "jwt",
    WebSocket: FakeSocket,
    fetch: async () => new Response(JSON.stringify({ ticket: "tk" }), { status: 201 }),
    timers: fakeTimers,
    window: null,
    random: () => 0,
  });
  client.on("state", (s) => states.push(s));
  client.on("event", (e) => events.push(e));
  const opened = async () => {
    for (let i = 0; i < 20 && sockets.length === 0; i++) await new Promise((r) => setImmediate(r));
    return sockets.at(-1)!;
  };
  const event = (seq: number) => ({ type: "agent_message", seq, event_id: `e${seq}`, run_id: "r", thread_id: "t", ts: "2026-01-01T00:00:00Z", data: {} });
  return { client, timers, states, events, opened, event };
}

const established = { type: "connection_established", connection_id: "c", user_id: "u", session_expires_at: "2026-01-01T01:00:00Z", heartbeat_interval_ms: 25_000, epoch: "E" };

describe("protocol revision 2 only", () => {
  it("takes latest_seq from connection_established as the baseline", async () => {
    const { client, states, events, opened, event } = harness();
    client.connect();
    const socket = await opened();
    socket.receive({ ...established, latest_seq: 4 });
    expect(client.state).toBe("open");
    expect(client.lastSeq).toBe(4);
    socket.receive(event(5));
    expect(events.map((e) => e.seq)).toEqual([5]);
    expect(states.at(-1)?.errorCode).toBe("CONNECTED");
    client.close();
  });

  it("does not open on a connection_established without latest_seq: the connect timeout gives the socket up", async () => {
    const { client, timers, events, opened, event } = harness();
    client.connect();
    const socket = await opened();
    socket.receive(established);
    socket.receive(event(1));
    expect(client.state).toBe("connecting");
    expect(events).toEqual([]);
    const connectTimer = timers.find((t) => t.ms === 15_000)!;
    connectTimer.run();
    expect(client.state).toBe("reconnecting");
    client.close();
  });

  it("ignores a resync_required without latest_seq, and takes one with it as the new baseline", async () => {
    const { client, events, opened, event } = harness();
    client.connect();
    const socket = await opened();
    socket.receive({ ...established, latest_seq: 2 });
    socket.receive({ type: "resync_required", code: "HISTORY_UNAVAILABLE", epoch: "F" });
    expect([client.lastSeq, client.epoch]).toEqual([2, "E"]);
    socket.receive({ type: "resync_required", code: "HISTORY_UNAVAILABLE", latest_seq: 9, epoch: "F" });
    expect([client.lastSeq, client.epoch]).toEqual([9, "F"]);
    socket.receive(event(10));
    expect(events.map((e) => e.seq)).toEqual([10]);
    client.close();
  });
});
