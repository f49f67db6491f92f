/**
 * What the tabs of one browser say to each other over their BroadcastChannel:
 * private to the SDK (docs/protocol.md §8.6), versioned in the channel's name
 * (SharedGatewayClient). Anything on the channel is checked before it is
 * used: another script of the origin, or another version of the app, may
 * post there, and a malformed message must be ignored, not thrown on.
 */
import type { AckEvent, AgentEvent, ClientError, ConnectionState, ResyncEvent, StateChange } from "../types.js";

/** A tab's place in the stream: the last seq it handed to its app, and the epoch of the counter. */
export interface Position {
  readonly lastSeq: number | undefined;
  readonly epoch: string | undefined;
}

export interface RelayedMessage {
  readonly text: string;
  readonly threadId: string;
  readonly messageId: string;
}

/** Every message names its sender; a leader's messages also name its term, so a deposed leader is told apart. */
export type TabMessage =
  /** A tab joined, or saw a hole: its position (a leader behind it resumes from there). */
  | { k: "hello"; from: string; pos: Position }
  /** The leader is alive (also its answer to a hello or a claim). */
  | { k: "beat"; from: string; term: number }
  /** The leader is leaving (closed by the app, page hidden or frozen): take over now, not after a timeout. */
  | { k: "resign"; from: string; term: number }
  /** Election without Web Locks: a tab proposes itself as leader of `term`. */
  | { k: "claim"; from: string; term: number }
  /** A new leader asks every tab for its position before it connects. */
  | { k: "collect"; from: string; term: number }
  | { k: "position"; from: string; term: number; pos: Position }
  /** A tab's chat message, for the leader to send. */
  | { k: "send"; from: string; term: number; message: RelayedMessage }
  | { k: "state"; from: string; term: number; change: StateChange; pos: Position }
  | { k: "event"; from: string; term: number; event: AgentEvent }
  | { k: "resync"; from: string; term: number; resync: ResyncEvent }
  | { k: "error"; from: string; term: number; error: ClientError }
  | { k: "ack"; from: string; term: number; ack: AckEvent };

export type TabMessageKind = TabMessage["k"];

const STATES: ReadonlySet<ConnectionState> = new Set(["connecting", "open", "reconnecting", "closed"]);
const MAX_ID = 128;

type Check = (m: Record<string, unknown>) => boolean;
const CHECKS: Record<TabMessageKind, Check> = {
  hello: (m) => isPosition(m.pos),
  beat: () => true,
  resign: () => true,
  claim: () => true,
  collect: () => true,
  position: (m) => isPosition(m.pos),
  send: (m) => isRelayed(m.message),
  state: (m) => isPosition(m.pos) && isObject(m.change) && STATES.has(m.change.state as ConnectionState) && typeof m.change.errorCode === "string",
  event: (m) => isObject(m.event) && isSeq(m.event.seq) && typeof m.event.type === "string",
  resync: (m) => isObject(m.resync) && (m.resync.latestSeq === undefined || isSeq(m.resync.latestSeq)) && isOptionalId(m.resync.epoch),
  error: (m) => isObject(m.error) && typeof m.error.code === "string" && isOptionalId(m.error.messageId),
  ack: (m) => isObject(m.ack) && isId(m.ack.messageId),
};

/** The message, or undefined for anything that is not one of ours, well formed. */
export function parseMessage(data: unknown): TabMessage | undefined {
  if (!isObject(data) || typeof data.k !== "string" || !Object.hasOwn(CHECKS, data.k)) return undefined;
  if (!isId(data.from)) return undefined;
  if (data.k !== "hello" && !isSeq(data.term)) return undefined;
  return CHECKS[data.k as TabMessageKind](data) ? (data as TabMessage) : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isSeq(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function isId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_ID;
}

function isOptionalId(value: unknown): boolean {
  return value === undefined || isId(value);
}

function isPosition(value: unknown): value is Position {
  return isObject(value) && (value.lastSeq === undefined || isSeq(value.lastSeq)) && isOptionalId(value.epoch);
}

function isRelayed(value: unknown): value is RelayedMessage {
  return isObject(value) && typeof value.text === "string" && isId(value.threadId) && isId(value.messageId);
}

/** The lowest position, to resume from: every tab already has what lies at or below it. */
export function lowestPosition(positions: Iterable<Position>): Position {
  let lowest: Position = { lastSeq: undefined, epoch: undefined };
  for (const p of positions) {
    if (p.lastSeq !== undefined && (lowest.lastSeq === undefined || p.lastSeq < lowest.lastSeq)) lowest = p;
  }
  return lowest;
}
