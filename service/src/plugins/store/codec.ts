/**
 * The one framing of messages on the bus. A user's channel carries events,
 * `<seq> <epoch> <body>` (written by the publish scripts in scripts.ts, in
 * Lua, so that seq order and channel order are one), and control messages,
 * `c <payload>`; an instance's channel carries control payloads as they are.
 * An epoch never contains a space (see newEpoch) and a seq is digits, so the
 * body, which may, is everything after the second space.
 */
import type { BusMessage } from "./types.js";

/** What a channel carries, known from the channel itself (never from the message). */
export type BusRoute = { readonly kind: "user"; readonly userId: string } | { readonly kind: "instance" };

const CONTROL_PREFIX = "c ";

/** An event as published on a user's channel (what gwPublish builds in Lua). */
export function encodeEventFrame(seq: number, epoch: string, body: string): string {
  return `${seq} ${epoch} ${body}`;
}

/** A control message on a user's channel; a seq is digits, so it never starts with "c ". */
export function encodeUserControl(payload: string): string {
  return `${CONTROL_PREFIX}${payload}`;
}

/** A message heard on a channel, or undefined when it is not one of ours (dropped, never thrown). */
export function decodeBusMessage(route: BusRoute, message: string): BusMessage | undefined {
  if (route.kind === "instance") return { kind: "instance_control", payload: message };
  if (message.startsWith(CONTROL_PREFIX)) return { kind: "user_control", userId: route.userId, payload: message.slice(CONTROL_PREFIX.length) };
  const i = message.indexOf(" ");
  const j = message.indexOf(" ", i + 1);
  const seq = Number(message.slice(0, i));
  if (i <= 0 || j < 0 || !Number.isSafeInteger(seq)) return undefined;
  return { kind: "event", userId: route.userId, epoch: message.slice(i + 1, j), event: { seq, body: message.slice(j + 1) } };
}

/**
 * The `ts` of an event body (as the gateway serialises it) without parsing
 * the JSON: the bus lag is measured on every message. "" when there is none.
 */
export function eventTimestamp(body: string): string {
  const at = body.indexOf('"ts":"');
  return at < 0 ? "" : body.slice(at + 6, body.indexOf('"', at + 6));
}
