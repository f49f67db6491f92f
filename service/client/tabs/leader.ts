/**
 * The leader tab's side: the one GatewayClient of the browser. It resumes
 * from the lowest position any tab has (so no tab sees a hole), hands every
 * event, state change, resync, error and ack to all tabs (each tab drops the
 * seqs it already has, and keeps the acks of its own messages), and sends the
 * chat messages of every tab until acked.
 */
import { GatewayClient, type GatewayClientOptions } from "../index.js";
import type { GatewayClientEvents, StateChange, Timers } from "../types.js";
import { lowestPosition, type Position, type RelayedMessage, type TabMessage } from "./messages.js";
import { TimerSet } from "../timers.js";

/** A leader's message before it is signed with the leader's id and term. */
export type Outgoing = TabMessage extends infer M ? (M extends { term: number } ? Omit<M, "from" | "term"> : never) : never;

export interface LeaderContext {
  readonly options: GatewayClientOptions;
  readonly timers: Timers;
  readonly heartbeatMs: number;
  readonly collectMs: number;
  /** Hands a message to every other tab and to this one. */
  publish(message: Outgoing): void;
  /** This tab's own position. */
  position(): Position;
}

export class Leader {
  private client: GatewayClient | undefined;
  private detach: Array<() => void> = [];
  /** Positions answered to the current collect; undefined when none is under way. */
  private positions: Position[] | undefined;
  private readonly relayed = new Map<string, RelayedMessage>();
  private lastChange: StateChange | undefined;
  private readonly timers: TimerSet<"beat" | "collect">;
  private stopped = false;

  constructor(private readonly ctx: LeaderContext) {
    this.timers = new TimerSet(ctx.timers);
  }

  start(): void {
    this.beat();
    this.collect();
  }

  /** Ends the leadership: the socket closes, and the tabs hear nothing more from this leader. */
  stop(): void {
    this.stopped = true;
    this.timers.clearAll();
    this.dropClient();
  }

  /** Messages for the leader from the other tabs. */
  onMessage(message: TabMessage): void {
    switch (message.k) {
      case "position":
        this.positions?.push(message.pos);
        return;
      case "hello":
        this.ctx.publish({ k: "beat" });
        // A tab behind what this socket delivers (a persisted position, or a hole) needs a resume from its position.
        if (this.positions) this.positions.push(message.pos);
        // A client that stopped (revoked, origin refused) tries again when a tab joins, as a new GatewayClient would.
        else if (this.isBehind(message.pos) || this.lastChange?.state === "closed") this.collect();
        else if (this.lastChange) this.publishState(this.lastChange);
        return;
      case "claim":
        this.ctx.publish({ k: "beat" }); // alive: the claim is withdrawn
        return;
      case "send":
        this.relay(message.message);
        return;
      default:
        return;
    }
  }

  /** Sends a tab's chat message (again after every leader change, until acked: the gateway runs a message_id once). */
  relay(message: RelayedMessage): void {
    this.relayed.set(message.messageId, message);
    if (this.client) this.sendOn(this.client, message);
  }

  private beat(): void {
    this.ctx.publish({ k: "beat" });
    this.timers.set("beat", this.ctx.heartbeatMs, () => this.beat());
  }

  /** Asks every tab for its position, waits `collectMs`, and (re)connects from the lowest. */
  private collect(): void {
    if (this.positions) return; // one under way already counts every tab
    this.positions = [this.ctx.position()];
    this.ctx.publish({ k: "collect" });
    this.timers.set("collect", this.ctx.collectMs, () => {
      const from = lowestPosition(this.positions ?? []);
      this.positions = undefined;
      if (!this.stopped) this.connectFrom(from);
    });
  }

  private isBehind(pos: Position): boolean {
    const here = this.client?.lastSeq;
    const sameEpoch = pos.epoch === undefined || this.client?.epoch === undefined || pos.epoch === this.client.epoch;
    return pos.lastSeq !== undefined && here !== undefined && sameEpoch && pos.lastSeq < here;
  }

  private connectFrom(from: Position): void {
    this.dropClient();
    const client = new GatewayClient({ ...this.ctx.options, lastSeq: from.lastSeq, epoch: from.epoch });
    this.client = client;
    const on = <K extends keyof GatewayClientEvents>(type: K, listener: (event: GatewayClientEvents[K]) => void) =>
      this.detach.push(client.on(type, listener));
    on("state", (change) => this.publishState(change));
    on("event", (event) => this.ctx.publish({ k: "event", event }));
    on("resync", (resync) => this.ctx.publish({ k: "resync", resync }));
    on("error", (error) => this.ctx.publish({ k: "error", error }));
    on("ack", (ack) => {
      this.relayed.delete(ack.messageId);
      this.ctx.publish({ k: "ack", ack });
    });
    for (const message of this.relayed.values()) this.sendOn(client, message);
    client.connect();
  }

  private publishState(change: StateChange): void {
    this.lastChange = change;
    this.ctx.publish({ k: "state", change, pos: { lastSeq: this.client?.lastSeq, epoch: this.client?.epoch } });
  }

  private sendOn(client: GatewayClient, message: RelayedMessage): void {
    try {
      client.sendChatMessage(message);
    } catch (err) {
      // The sending tab checked it too; what still fails here is reported to that tab, not thrown at this one.
      this.relayed.delete(message.messageId);
      const text = err instanceof Error ? err.message : String(err);
      this.ctx.publish({ k: "error", error: { code: "BAD_REQUEST", message: text, fatal: false, messageId: message.messageId } });
    }
  }

  /** Closes the socket without telling the tabs "closed": the next leader's client carries on. */
  private dropClient(): void {
    for (const off of this.detach.splice(0)) off();
    this.client?.close();
    this.client = undefined;
  }
}
