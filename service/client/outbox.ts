/**
 * The chat messages the app sent that the gateway has not acked (§5, §5a).
 * Each is sent once per connection until its `ack`: the gateway runs a
 * message_id once, so sending it again on a new connection never runs it
 * twice. Sending is paced by the gateway's own token bucket at a lower rate:
 * a reconnect with a long outbox must not be closed with 4429 and then do
 * the same again.
 *
 * A closure rather than a class: the SDK's size budget is tight, and local
 * names minify where `this.` properties do not.
 */
import { isProtocolId, MAX_ID_LENGTH, refillBucket, FRAME_BURST_SECONDS } from "../src/protocol.js";
import type { ChatMessageFrame } from "./types.js";

export interface ChatMessage {
  readonly text: string;
  readonly threadId: string;
  readonly messageId?: string;
}

export interface OutboxOptions {
  readonly now: () => number;
  /** Chat messages per second (the bucket's rate). */
  readonly perSecond: number;
  /** How long to hold a message the gateway could not take before sending it again. */
  readonly retryDelay: () => number;
}

export interface Outbox {
  /** Message ids not yet acked, in the order they were sent. */
  ids(): string[];
  has(messageId: string): boolean;
  /** Queues a frame (the caller checked that its message_id is not queued yet). */
  add(frame: ChatMessageFrame): void;
  /** Removes an acked message; its frame, or undefined when it was not queued. */
  ack(messageId: string): ChatMessageFrame | undefined;
  /** A non-fatal error frame naming a message: dropped for good, held to send again, or not about the outbox. */
  refuse(messageId: string | undefined, code: string): "dropped" | "resend" | undefined;
  /**
   * Sends, through `send`, what connection `connection` has not been sent
   * yet, as far as the budget allows. Returns the ms until something more may
   * go (undefined: nothing waits, or `send` failed and a new connection will pump).
   */
  pump(connection: number, send: (frame: ChatMessageFrame) => boolean): number | undefined;
}

interface Entry {
  readonly frame: ChatMessageFrame;
  /** The connection it was last sent on; sent again on any other. */
  sentOn: number | undefined;
  /** Not before this time (after the gateway could not take it). */
  notBefore: number;
}

/** §5a: a final refusal; sending it again would be refused again. */
const FINAL = ["MESSAGE_REJECTED", "CHAT_UNAVAILABLE"];
/** §5a, §8.2: the agent backend or the store did not take it: not acked, send it again later. */
const AGAIN = ["AGENT_UNAVAILABLE", "RATE_LIMITED", "TICKET_STORE_UNAVAILABLE"];

export function createOutbox({ now, perSecond, retryDelay }: OutboxOptions): Outbox {
  const queue = new Map<string, Entry>();
  let budget = perSecond * FRAME_BURST_SECONDS;
  let budgetAt = 0;
  return {
    ids: () => [...queue.keys()],
    has: (messageId) => queue.has(messageId),
    add(frame) {
      queue.set(frame.message_id, { frame, sentOn: undefined, notBefore: 0 });
    },
    ack(messageId) {
      const entry = queue.get(messageId);
      queue.delete(messageId);
      return entry?.frame;
    },
    refuse(messageId, code) {
      const entry = messageId === undefined ? undefined : queue.get(messageId);
      if (!entry) return undefined;
      if (FINAL.includes(code)) {
        queue.delete(messageId!);
        return "dropped";
      }
      if (!AGAIN.includes(code)) return undefined;
      entry.sentOn = undefined;
      entry.notBefore = now() + retryDelay();
      return "resend";
    },
    pump(connection, send) {
      const at = now();
      budget = refillBucket(budget, at - budgetAt, perSecond);
      budgetAt = at;
      let wakeAt = Infinity;
      for (const entry of queue.values()) {
        if (entry.sentOn === connection) continue;
        if (entry.notBefore > at) {
          wakeAt = Math.min(wakeAt, entry.notBefore);
          continue;
        }
        if (budget < 1) {
          wakeAt = Math.min(wakeAt, at + ((1 - budget) / perSecond) * 1000);
          break;
        }
        if (!send(entry.frame)) return undefined;
        entry.sentOn = connection;
        budget -= 1;
      }
      return wakeAt === Infinity ? undefined : Math.max(0, Math.ceil(wakeAt - at));
    },
  };
}

/** The frame of a message the app sends, its ids checked here: the gateway would refuse a bad one. */
export function chatFrame(message: ChatMessage): ChatMessageFrame {
  const { text, threadId } = message;
  if (typeof text !== "string" || text.trim() === "") throw new TypeError("GatewayClient.send: text must be a non-empty string");
  if (!isProtocolId(threadId)) throw new TypeError(`GatewayClient.send: threadId must be a string of 1 to ${MAX_ID_LENGTH} characters`);
  const messageId = message.messageId ?? newMessageId();
  if (!isProtocolId(messageId)) throw new TypeError(`GatewayClient.send: messageId must be a string of 1 to ${MAX_ID_LENGTH} characters`);
  return { type: "chat_message", message_id: messageId, thread_id: threadId, text };
}

/** Refused here rather than by the gateway: a frame over its MAX_MESSAGE_BYTES would end the connection with 1009, and never be acked. */
export function assertFits(frame: ChatMessageFrame, maxMessageBytes: number): void {
  const bytes = new TextEncoder().encode(JSON.stringify(frame)).length;
  if (bytes > maxMessageBytes) {
    throw new RangeError(`GatewayClient.send: the message is ${bytes} bytes; the gateway accepts at most ${maxMessageBytes}`);
  }
}

/** crypto.randomUUID exists only in secure contexts; getRandomValues everywhere. */
function newMessageId(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
