/**
 * One socket per browser: a GatewayClient shared by the tabs of one origin
 * (opt-in, `shareAcrossTabs: true`). Each tab has one of these; the elected
 * leader tab runs the only GatewayClient (./leader.ts) and the others talk to
 * it over a BroadcastChannel. To the app it looks like a GatewayClient: the
 * same events, every seq once and in order, and acks for its own messages.
 *
 * When the leader tab closes, the next tab in the Web Locks queue leads at
 * once; when it freezes (no heartbeat for `leaderTimeoutMs`), a tab steals
 * the lock. The new leader asks every tab for its position and resumes from
 * the lowest, so no tab misses an event; each tab drops what it already has.
 */
import type { SendOptions } from "../index.js";
import type { AgentEvent, ConnectionState, GatewayClientEvents, StateChange } from "../types.js";
import { BeatElection, LockElection, type Election, type LockManagerLike } from "./election.js";
import { Emitter, type Listener } from "../emitter.js";
import { Leader, type Outgoing } from "./leader.js";
import { parseMessage, type Position, type RelayedMessage, type TabMessage } from "./messages.js";
import type { ChannelLike, LifecycleTarget, ShareOptions, SharedGatewayClientOptions } from "./options.js";
import { checkedMessage, newId } from "./outgoing.js";
import { realTimers, TimerSet } from "../timers.js";

export type { ChannelLike, LifecycleTarget, ShareOptions, SharedGatewayClientOptions } from "./options.js";

export class SharedGatewayClient {
  /** This tab's id on the channel. */
  readonly tabId: string;
  private readonly options: SharedGatewayClientOptions;
  private readonly channelName: string;
  private readonly settings: { heartbeatMs: number; leaderTimeoutMs: number; collectMs: number };
  private readonly timers: TimerSet<"watch" | "takeover">;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly events = new Emitter();
  /** This tab's own unacked messages: sent to every new leader until acked. */
  private readonly pending = new Map<string, RelayedMessage>();

  private pos: Position;
  private change: StateChange = { state: "closed", errorCode: "CLOSED_BY_APP", reason: "not connected" };
  private channel: ChannelLike | undefined;
  private election: Election | undefined;
  private leader: Leader | undefined;
  /** The highest leader term seen, its leader, and when that leader was last heard. */
  private term = 0;
  private leaderId: string | undefined;
  private heardAt = 0;
  /** A hole was reported to the leader and not yet filled. */
  private behind = false;

  constructor(options: SharedGatewayClientOptions) {
    if (typeof options.getToken !== "function") throw new TypeError("GatewayClient: options.getToken is required");
    const share = options.share ?? {};
    this.options = options;
    this.channelName = `chat-gateway/tabs/v1 ${options.url} ${share.key ?? ""}`;
    this.settings = { heartbeatMs: share.heartbeatMs ?? 400, leaderTimeoutMs: share.leaderTimeoutMs ?? 1200, collectMs: share.collectMs ?? 150 };
    this.timers = new TimerSet<"watch" | "takeover">(options.timers ?? realTimers);
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.tabId = newId();
    this.pos = { lastSeq: options.lastSeq, epoch: options.epoch };
  }

  // ── the app's side: as GatewayClient ──

  get state(): ConnectionState {
    return this.change.state;
  }

  get lastSeq(): number | undefined {
    return this.pos.lastSeq;
  }

  get epoch(): string | undefined {
    return this.pos.epoch;
  }

  get pendingMessageIds(): string[] {
    return [...this.pending.keys()];
  }

  /** True while this tab holds the browser's socket. */
  get isLeader(): boolean {
    return this.leader !== undefined;
  }

  on<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): () => void {
    return this.events.on(type, listener);
  }

  off<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): void {
    this.events.off(type, listener);
  }

  /** Joins the tabs: leads if no tab does, follows otherwise. Idempotent. */
  connect(): void {
    if (this.channel) return;
    const share = this.options.share ?? {};
    const Channel = share.BroadcastChannel ?? (globalThis as { BroadcastChannel?: new (name: string) => ChannelLike }).BroadcastChannel;
    if (!Channel) throw new TypeError("GatewayClient: shareAcrossTabs needs BroadcastChannel");
    const channel = new Channel(this.channelName);
    this.channel = channel;
    channel.onmessage = (event) => this.receive(event.data);
    this.election = this.makeElection(share);
    this.lifecycle(true);
    this.setState({ state: "connecting", errorCode: "CONNECTING", reason: "connecting…" });
    // With Web Locks, a held lock means a leader: only its silence for the whole timeout makes this tab steal.
    // Without, a live leader answers the hello at once: a heartbeat without an answer is enough to claim.
    const wait = this.election instanceof BeatElection ? this.settings.heartbeatMs : this.settings.leaderTimeoutMs;
    this.heardAt = this.now() - this.settings.leaderTimeoutMs + wait;
    this.post({ k: "hello", from: this.tabId, pos: this.pos });
    this.election.start();
    this.watch();
  }

  /** Leaves the tabs (another takes over the socket if this one held it). Unacked messages stay with the leader. */
  close(): void {
    if (!this.channel) return;
    this.lifecycle(false);
    this.resign();
    this.election?.stop();
    this.election = undefined;
    this.timers.clearAll();
    this.channel.onmessage = null;
    this.channel.close();
    this.channel = undefined;
    this.leaderId = undefined;
    this.setState({ state: "closed", errorCode: "CLOSED_BY_APP", reason: "closed by the app" });
  }

  send(text: string, options: SendOptions): string {
    return this.sendChatMessage({ text, ...options });
  }

  sendChatMessage(message: { text: string; threadId: string; messageId?: string }): string {
    const relayed = checkedMessage(message, this.options.maxMessageBytes ?? 65_536);
    if (this.pending.has(relayed.messageId)) return relayed.messageId;
    this.pending.set(relayed.messageId, relayed);
    this.forward(relayed);
    return relayed.messageId;
  }

  // ── election ──

  private makeElection(share: ShareOptions): Election {
    const hooks = { elected: (stolen: boolean) => this.lead(stolen), deposed: () => this.stepDown() };
    const locks = share.locks === undefined ? (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks : share.locks;
    const timers = this.options.timers ?? realTimers;
    const settle = () => new Promise<void>((resolve) => timers.setTimeout(resolve, this.settings.heartbeatMs));
    if (locks) return new LockElection(locks, this.channelName, hooks, settle);
    const post = (m: TabMessage) => this.post(m);
    return new BeatElection({ self: this.tabId, post, timers: this.options.timers ?? realTimers, claimMs: this.settings.collectMs, nextTerm: () => this.term + 1 }, hooks);
  }

  private lead(stolen = false): void {
    if (this.leader || !this.channel) return;
    // A stolen lead outranks a tab the lock was granted to meanwhile (it saw the same terms, and would pick the next one).
    const term = this.term + (stolen ? 2 : 1);
    this.term = term;
    this.leaderId = this.tabId;
    this.behind = false;
    this.timers.clear("takeover");
    const leader = new Leader({
      options: this.options,
      timers: this.options.timers ?? realTimers,
      heartbeatMs: this.settings.heartbeatMs,
      collectMs: this.settings.collectMs,
      position: () => this.pos,
      // Signed and posted to the others; handled here too, as a follower would.
      publish: (outgoing: Outgoing) => {
        if (this.leader !== leader) return;
        const message = { ...outgoing, from: this.tabId, term } as TabMessage;
        this.post(message);
        this.handle(message);
      },
    });
    this.leader = leader;
    this.options.share?.onRoleChange?.(true);
    leader.start();
    for (const message of this.pending.values()) leader.relay(message);
  }

  private stepDown(): void {
    const leader = this.leader;
    if (!leader) return;
    this.leader = undefined;
    // Deposed: the tab that took over gets a full timeout to be heard before anyone takes over again.
    this.heardAt = this.now();
    leader.stop();
    this.election?.resign();
    this.options.share?.onRoleChange?.(false);
  }

  /**
   * Watches the leader's heartbeats (twice per heartbeat interval); after
   * `leaderTimeoutMs` of silence, takes over, after a short random stagger so
   * that one tab does rather than all of them in turn.
   */
  private watch(): void {
    const tick = this.settings.heartbeatMs / 2;
    const expected = this.now() + tick;
    this.timers.set("watch", tick, () => {
      const now = this.now();
      // This tab was frozen or throttled itself: the leader's messages may be queued right behind this timer. Look again next time.
      const late = now - expected > this.settings.heartbeatMs;
      if (!this.leader && !late && now - this.heardAt > this.settings.leaderTimeoutMs && !this.timers.has("takeover")) {
        const silentSince = this.heardAt;
        this.timers.set("takeover", Math.floor((this.random() * this.settings.heartbeatMs) / 4), () => {
          if (!this.leader && this.heardAt === silentSince) this.election?.takeOver();
        });
      }
      this.watch();
    });
  }

  // ── messages ──

  private receive(data: unknown): void {
    const message = parseMessage(data);
    if (!message || message.from === this.tabId) return;
    this.election?.observe(message);
    this.handle(message);
  }

  private handle(message: TabMessage): void {
    switch (message.k) {
      case "hello":
      case "position":
      case "send":
      case "claim":
        this.leader?.onMessage(message);
        return;
      default:
        if (this.isCurrentLeader(message)) this.fromLeader(message);
    }
  }

  /** Adopts a leader of a higher term; drops what a deposed leader still says. */
  private isCurrentLeader(message: TabMessage & { term: number }): boolean {
    if (message.term < this.term) return false;
    // A tab holding the Web Lock leads until the lock is taken from it (LockElection says so), whatever others say.
    if (this.leader && message.from !== this.tabId && this.election instanceof LockElection) return false;
    if (message.term === this.term && message.from !== this.leaderId) {
      // Two leaders of one term (only without Web Locks): the lower tab id wins.
      if (this.leaderId !== undefined && this.leaderId < message.from) return false;
    }
    this.heardAt = this.now();
    if (message.term === this.term && message.from === this.leaderId) return true;
    if (message.from !== this.tabId) this.stepDown();
    this.term = message.term;
    this.leaderId = message.from;
    this.behind = false;
    // A new leader: it has none of this tab's unacked messages yet.
    if (message.from !== this.tabId) for (const m of this.pending.values()) this.post({ k: "send", from: this.tabId, term: this.term, message: m });
    return true;
  }

  private fromLeader(message: TabMessage): void {
    switch (message.k) {
      case "collect":
        if (message.from !== this.tabId) this.post({ k: "position", from: this.tabId, term: message.term, pos: this.pos });
        return;
      case "state":
        if (this.pos.lastSeq === undefined) this.pos = message.pos;
        else if (this.pos.epoch === undefined && message.pos.epoch !== undefined) this.pos = { ...this.pos, epoch: message.pos.epoch };
        this.setState(message.change);
        return;
      case "event":
        return this.onEvent(message.event);
      case "resync":
        this.pos = { lastSeq: message.resync.latestSeq, epoch: message.resync.epoch };
        this.behind = false;
        this.events.emit("resync", message.resync);
        return;
      case "error":
        if (message.error.messageId === undefined || this.pending.has(message.error.messageId)) this.events.emit("error", message.error);
        return;
      case "ack":
        if (this.pending.delete(message.ack.messageId)) this.events.emit("ack", message.ack);
        return;
      case "resign":
        // Without Web Locks its silence starts now: the next look at the clock takes over. (A released Web Lock needs no help.)
        if (message.from !== this.tabId && !(this.election instanceof LockElection)) this.heardAt = -Infinity;
        return;
      default:
        return; // beat: heard, nothing else to do
    }
  }

  /** Every seq once, in order: what this tab has is dropped; a hole is reported to the leader, which resumes from here. */
  private onEvent(event: AgentEvent): void {
    const last = this.pos.lastSeq;
    if (last !== undefined && event.seq <= last) return;
    if (last !== undefined && event.seq > last + 1) {
      if (!this.behind) this.post({ k: "hello", from: this.tabId, pos: this.pos });
      this.behind = true;
      if (this.leader) this.leader.onMessage({ k: "hello", from: this.tabId, pos: this.pos });
      return;
    }
    this.behind = false;
    this.pos = { lastSeq: event.seq, epoch: this.pos.epoch };
    this.events.emit("event", event);
  }

  private forward(message: RelayedMessage): void {
    if (this.leader) this.leader.relay(message);
    else if (this.leaderId !== undefined) this.post({ k: "send", from: this.tabId, term: this.term, message });
  }

  // ── plumbing ──

  private post(message: TabMessage): void {
    try {
      this.channel?.postMessage(message);
    } catch {
      /* closed meanwhile */
    }
  }

  /** `freeze` is announced on the document, `pagehide` on the window (Page Lifecycle API). */
  private lifecycle(on: boolean): void {
    const given = this.options.share?.lifecycle;
    const global = globalThis as { document?: LifecycleTarget; window?: LifecycleTarget };
    const targets: Array<[LifecycleTarget | undefined | null, "freeze" | "pagehide"]> = [
      [given === undefined ? global.document : given, "freeze"],
      [given === undefined ? global.window : given, "pagehide"],
    ];
    for (const [target, type] of targets) {
      if (on) target?.addEventListener(type, this.onHidden);
      else target?.removeEventListener(type, this.onHidden);
    }
  }

  private readonly onHidden = (): void => this.resign();

  /** Leaves the lead and says so, so that another tab takes over at once (without Web Locks, it would wait for the silence). */
  private resign(): void {
    if (!this.leader) return;
    this.post({ k: "resign", from: this.tabId, term: this.term });
    this.stepDown();
  }

  private setState(change: StateChange): void {
    this.change = change;
    this.events.emit("state", change);
  }
}
