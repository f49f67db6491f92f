/**
 * A browser's worth of tabs in one Node process, for the tabs layer's unit
 * tests: a clock the test moves, a BroadcastChannel hub and a Web Locks
 * manager with the browser's semantics (FIFO, abort while queued, steal,
 * release when the tab goes away), and tabs that can be frozen (no timers, no
 * messages) and thawed, or killed without a goodbye. The gateway end is a
 * socket the test answers by hand.
 */
import type { Timers, WebSocketLike } from "../../service/client/types.js";
import type { ChannelLike } from "../../service/client/tabs/SharedGatewayClient.js";
import type { LockManagerLike } from "../../service/client/tabs/election.js";

interface Pending {
  at: number;
  seq: number;
  run: () => void;
  owner: Tab;
}

/** One clock for every tab; each tab's timers stop while it is frozen. */
export class Clock {
  now = 0;
  private order = 0;
  private readonly timers = new Set<Pending>();

  timersFor(owner: Tab): Timers {
    return {
      setTimeout: (run, ms) => {
        const timer = { at: this.now + Math.max(0, ms), seq: this.order++, run, owner };
        this.timers.add(timer);
        return timer;
      },
      clearTimeout: (handle) => void this.timers.delete(handle as Pending),
    };
  }

  /** Runs everything due up to now + ms (timers and messages), in time order. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      await flush();
      const due = [...this.timers].filter((t) => t.at <= end && !t.owner.frozen && !t.owner.dead).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.timers.delete(due);
      this.now = Math.max(this.now, due.at);
      due.run();
    }
    this.now = end;
    await flush();
  }

  dropTimersOf(owner: Tab): void {
    for (const t of this.timers) if (t.owner === owner) this.timers.delete(t);
  }
}

/** Lets promise callbacks (lock grants, fetch and its body) run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

export class Tab {
  frozen = false;
  dead = false;
  readonly inbox: Array<() => void> = [];
  constructor(readonly name: string) {}
}

/** BroadcastChannel: delivered after the clock's next step, never to the sender, held while the receiver is frozen. */
export class ChannelHub {
  private readonly open = new Set<FakeChannel>();
  readonly posted: unknown[] = [];
  /** When each tab gets its last message: delivery may be slow (`latency`), but stays in order, as the spec requires. */
  private readonly lastArrival = new Map<Tab, number>();

  /** `latency` draws each message's delay in ms (default 0: the next step). */
  constructor(
    private readonly clock: Clock,
    private readonly latency: () => number = () => 0,
  ) {}

  classFor(tab: Tab): new (name: string) => ChannelLike {
    const hub = this;
    return class extends FakeChannel {
      constructor(name: string) {
        super(name, tab, hub);
      }
    };
  }

  add(channel: FakeChannel): void {
    this.open.add(channel);
  }

  remove(channel: FakeChannel): void {
    this.open.delete(channel);
  }

  deliver(from: FakeChannel, message: unknown): void {
    if (from.tab.frozen || from.tab.dead) return;
    this.posted.push(message);
    const copy = structuredClone(message);
    for (const to of this.open) {
      if (to === from || to.name !== from.name) continue;
      const at = Math.max(this.clock.now + this.latency(), this.lastArrival.get(to.tab) ?? 0);
      this.lastArrival.set(to.tab, at);
      this.clock.timersFor(to.tab).setTimeout(() => to.onmessage?.({ data: copy }), at - this.clock.now);
    }
  }

  /** What an attacker (another script of the origin) posts on a channel. */
  inject(name: string, message: unknown): void {
    for (const to of this.open) if (to.name === name) this.clock.timersFor(to.tab).setTimeout(() => to.onmessage?.({ data: message }), 0);
  }

  namesOpen(): string[] {
    return [...new Set([...this.open].map((c) => c.name))];
  }
}

export class FakeChannel implements ChannelLike {
  onmessage: ((event: { data: unknown }) => void) | null = null;
  constructor(
    readonly name: string,
    readonly tab: Tab,
    private readonly hub: ChannelHub,
  ) {
    hub.add(this);
  }
  postMessage(message: unknown): void {
    this.hub.deliver(this, message);
  }
  close(): void {
    this.hub.remove(this);
  }
}

interface LockRequest {
  readonly tab: Tab;
  readonly callback: (lock: unknown) => Promise<void>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

/** The Web Locks API of one origin, with the spec's queueing, abort and steal (per lock name). */
export class LockHub {
  private readonly locks = new Map<string, { holder: LockRequest | undefined; queue: LockRequest[] }>();

  managerFor(tab: Tab): LockManagerLike {
    return {
      request: (name, options, callback) =>
        new Promise((resolve, reject) => {
          if (options.steal && options.signal) return reject(new DOMException("steal with signal", "NotSupportedError"));
          const lock = this.lock(name);
          if (options.ifAvailable && (lock.holder || lock.queue.length > 0)) {
            void Promise.resolve().then(() => callback(null).then(resolve, reject));
            return;
          }
          const request = { tab, callback, resolve, reject };
          if (options.signal?.aborted) return reject(new DOMException("aborted", "AbortError"));
          options.signal?.addEventListener("abort", () => {
            const i = lock.queue.indexOf(request);
            if (i >= 0) {
              lock.queue.splice(i, 1);
              reject(new DOMException("aborted", "AbortError"));
            }
          });
          if (options.steal) {
            const old = lock.holder;
            lock.holder = undefined;
            old?.reject(new DOMException("stolen", "AbortError"));
            this.grant(lock, request);
          } else {
            lock.queue.push(request);
            this.next(lock);
          }
        }),
    };
  }

  /** The browser releases a closed tab's locks and drops its queued requests. */
  tabGone(tab: Tab): void {
    for (const lock of this.locks.values()) {
      for (let i = lock.queue.length - 1; i >= 0; i--) if (lock.queue[i]!.tab === tab) lock.queue.splice(i, 1);
      if (lock.holder?.tab === tab) {
        lock.holder = undefined;
        this.next(lock);
      }
    }
  }

  private lock(name: string): { holder: LockRequest | undefined; queue: LockRequest[] } {
    let lock = this.locks.get(name);
    if (!lock) this.locks.set(name, (lock = { holder: undefined, queue: [] }));
    return lock;
  }

  private next(lock: { holder: LockRequest | undefined; queue: LockRequest[] }): void {
    if (lock.holder) return;
    const request = lock.queue.shift();
    if (request) this.grant(lock, request);
  }

  private grant(lock: { holder: LockRequest | undefined; queue: LockRequest[] }, request: LockRequest): void {
    lock.holder = request;
    // Granted in a later task, as browsers do.
    Promise.resolve()
      .then(() => request.callback({ name: "lock" }))
      .then(
      (value) => this.released(lock, request, () => request.resolve(value)),
      (err) => this.released(lock, request, () => request.reject(err)),
    );
  }

  private released(lock: { holder: LockRequest | undefined; queue: LockRequest[] }, request: LockRequest, settle: () => void): void {
    if (lock.holder !== request) return; // stolen earlier: already rejected
    lock.holder = undefined;
    settle();
    this.next(lock);
  }
}

/** The gateway end of one socket: the test answers the client's frames by hand. */
export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: Array<Record<string, unknown>> = [];
  closed = false;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(): void {
    this.closed = true;
    this.readyState = 3;
  }
  /** The gateway accepts: connection_established with the stream's head. */
  establish(latestSeq: number, epoch = "e1"): void {
    this.readyState = 1;
    this.onopen?.({});
    this.frame({ type: "connection_established", connection_id: "c", user_id: "u", session_expires_at: "2099-01-01T00:00:00Z", heartbeat_interval_ms: 30000, latest_seq: latestSeq, epoch });
  }
  frame(value: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(value) });
  }
  event(seq: number): void {
    this.frame({ seq, type: "agent_thinking", event_id: `ev-${seq}`, run_id: "r", thread_id: "t", ts: "2026-01-01T00:00:00Z", data: {} });
  }
}

/** fetch for the ticket endpoint: always a fresh ticket. */
export const ticketFetch: typeof fetch = async () => new Response(JSON.stringify({ ticket: "tk", expires_in: 30 }), { status: 201, headers: { "content-type": "application/json" } });
