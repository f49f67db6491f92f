/**
 * Which tab holds the socket. Two ways to elect it, behind one interface:
 *
 * - `LockElection`: the Web Locks API. Every tab queues for one exclusive
 *   lock; the browser grants it to one tab at a time and hands it to the next
 *   queued tab the moment the holder closes (or crashes). A frozen holder
 *   keeps its lock, so a tab that stops hearing the leader takes it with
 *   `steal: true`; the old holder's request then rejects, which deposes it
 *   as soon as it runs again. Tabs that notice the silence together would
 *   steal it from each other in turn: a second lock, taken `ifAvailable`,
 *   lets one of them steal.
 * - `BeatElection`, where Web Locks is missing (older Safari, some embedded
 *   webviews): a tab that hears no leader posts a claim for the next term and
 *   leads unless, within `claimMs`, it hears a live leader or a better claim
 *   (a higher term, or the same term from a lower tab id).
 *
 * Noticing that the leader went silent is the tab's job (missed heartbeats);
 * it then calls takeOver().
 */
import type { Timers } from "../types.js";
import type { TabMessage } from "./messages.js";
import { TimerSet } from "../timers.js";

export interface ElectionHooks {
  /** This tab leads from now on; `stolen` when it took the lead from a live (frozen) holder. */
  elected(stolen: boolean): void;
  /** It no longer does: its lock was stolen while it was frozen. */
  deposed(): void;
}

export interface Election {
  /** Become a candidate: lead when the leader goes away. */
  start(): void;
  /** The leader went silent: lead now. */
  takeOver(): void;
  /** Stop leading, and queue as a candidate again. */
  resign(): void;
  /** Leave for good (the client was closed). */
  stop(): void;
  /** Every message from another tab (the fallback election reads claims and beats). */
  observe(message: TabMessage): void;
}

/** The part of the Web Locks API used here; `navigator.locks` fits. */
export interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal; steal?: boolean; ifAvailable?: boolean }, callback: (lock: unknown) => Promise<void>): Promise<unknown>;
}

export class LockElection implements Election {
  /** Identifies the request in flight: a settled request that is no longer current is ignored. */
  private current: object | undefined;
  private queued: AbortController | undefined;
  private release: (() => void) | undefined;
  private stopped = true;

  /**
   * `settle` resolves when the other tabs have had time to hear a new leader
   * (a heartbeat): until then the takeover lock stays held, so a tab that
   * noticed the same silence does not steal the lead from the tab that just took it.
   */
  constructor(
    private readonly locks: LockManagerLike,
    private readonly name: string,
    private readonly hooks: ElectionHooks,
    private readonly settle: () => Promise<void>,
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.ask(false);
  }

  takeOver(): void {
    if (this.stopped || this.release) return;
    // Only the tab that gets the takeover lock steals; it holds it until the steal is granted.
    const takeover = (lock: unknown): Promise<void> => {
      if (lock === null || this.stopped || this.release) return Promise.resolve();
      this.queued?.abort();
      return this.ask(true).then(this.settle);
    };
    this.locks.request(`${this.name} takeover`, { ifAvailable: true }, takeover).catch(() => undefined);
  }

  resign(): void {
    if (!this.release) return;
    this.giveBack();
    if (!this.stopped) this.ask(false);
  }

  stop(): void {
    this.stopped = true;
    this.queued?.abort();
    this.giveBack();
    this.current = undefined;
  }

  observe(): void {}

  /** Queues for the lock, or (steal) takes it from its holder; resolves once granted (or given up). */
  private ask(steal: boolean): Promise<void> {
    const request = {};
    this.current = request;
    const abort = steal ? undefined : new AbortController();
    this.queued = abort;
    // `signal` cannot be combined with `steal` (the spec rejects it).
    const options = abort ? { signal: abort.signal } : { steal: true };
    let grantedOrDone: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (grantedOrDone = resolve));
    const granted = (): Promise<void> =>
      new Promise<void>((resolve) => {
        grantedOrDone();
        if (this.current !== request || this.stopped) return resolve(); // granted after we moved on: give it back
        this.queued = undefined;
        this.release = resolve;
        this.hooks.elected(steal);
      });
    this.locks.request(this.name, options, granted).then(
      () => this.settled(request),
      () => this.settled(request),
    ).finally(grantedOrDone);
    return done;
  }

  /** The request ended: we released it, or it was aborted while queued, or stolen while held. */
  private settled(request: object): void {
    if (this.current !== request) return;
    const held = this.release !== undefined;
    this.release = undefined;
    this.current = undefined;
    if (held) this.hooks.deposed();
    if (!this.stopped) this.ask(false);
  }

  private giveBack(): void {
    const release = this.release;
    this.release = undefined;
    this.current = undefined;
    release?.();
  }
}

export interface BeatElectionOptions {
  readonly self: string;
  readonly post: (message: TabMessage) => void;
  readonly timers: Timers;
  /** How long a claim waits for a better one. */
  readonly claimMs: number;
  /** The term to claim: one above the highest this tab has seen. */
  readonly nextTerm: () => number;
}

export class BeatElection implements Election {
  private readonly timers: TimerSet<"claim">;
  private claimTerm: number | undefined;
  private leading = false;
  private stopped = true;

  constructor(
    private readonly options: BeatElectionOptions,
    private readonly hooks: ElectionHooks,
  ) {
    this.timers = new TimerSet(options.timers);
  }

  start(): void {
    this.stopped = false;
  }

  takeOver(): void {
    if (this.stopped || this.leading || this.claimTerm !== undefined) return;
    const term = this.options.nextTerm();
    this.claimTerm = term;
    this.options.post({ k: "claim", from: this.options.self, term });
    this.timers.set("claim", this.options.claimMs, () => {
      this.claimTerm = undefined;
      if (this.stopped) return;
      this.leading = true;
      this.hooks.elected(false);
    });
  }

  resign(): void {
    this.leading = false;
  }

  stop(): void {
    this.stopped = true;
    this.leading = false;
    this.cancelClaim();
  }

  observe(message: TabMessage): void {
    if (this.claimTerm === undefined) return;
    // A leader answered (it is alive), or another tab's claim beats ours.
    const better = message.k === "claim" && (message.term > this.claimTerm || (message.term === this.claimTerm && message.from < this.options.self));
    if (message.k === "beat" || message.k === "collect" || better) this.cancelClaim();
  }

  private cancelClaim(): void {
    this.claimTerm = undefined;
    this.timers.clear("claim");
  }
}
