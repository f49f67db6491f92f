/**
 * A tab's chat message, checked where it is sent (as GatewayClient.send
 * checks it), so a bad one throws in the tab that sent it rather than on the
 * leader's side of the channel.
 */
import type { RelayedMessage } from "./messages.js";

const MAX_ID_LENGTH = 128;

export function checkedMessage(message: { text: string; threadId: string; messageId?: string }, maxMessageBytes: number): RelayedMessage {
  const { text, threadId } = message;
  if (typeof text !== "string" || text.trim() === "") throw new TypeError("GatewayClient.send: text must be a non-empty string");
  if (!isId(threadId)) throw new TypeError(`GatewayClient.send: threadId must be a string of 1 to ${MAX_ID_LENGTH} characters`);
  const messageId = message.messageId ?? newId();
  if (!isId(messageId)) throw new TypeError(`GatewayClient.send: messageId must be a string of 1 to ${MAX_ID_LENGTH} characters`);
  const bytes = new TextEncoder().encode(JSON.stringify({ type: "chat_message", message_id: messageId, thread_id: threadId, text })).length;
  if (bytes > maxMessageBytes) throw new RangeError(`GatewayClient.send: the message is ${bytes} bytes; the gateway accepts at most ${maxMessageBytes}`);
  return { text, threadId, messageId };
}

function isId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_ID_LENGTH;
}

/** crypto.randomUUID exists only in secure contexts; getRandomValues everywhere. */
export function newId(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  return [...c.getRandomValues(new Uint8Array(16))].map((x) => x.toString(16).padStart(2, "0")).join("");
}
