/**
 * Rules both ends of the socket follow (docs/protocol.md §4, §8.2), in one
 * home: the gateway checks them and the SDK (service/client) keeps to them,
 * so the two cannot drift apart. Nothing here may import anything: the SDK
 * bundles this file into the browser.
 */

/** The longest `message_id`, `thread_id` or `epoch` a frame may carry (§4). */
export const MAX_ID_LENGTH = 128;

/** A frame's id field: a string of 1 to MAX_ID_LENGTH characters. */
export function isProtocolId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_ID_LENGTH;
}

/**
 * The frame budget is a token bucket (§8.2, MAX_FRAMES_PER_SECOND): it refills
 * at `perSecond` and holds at most this many seconds' worth, so a short burst
 * passes and a sustained flood does not. The SDK paces its chat messages with
 * the same bucket at a lower rate, so a long outbox never trips 4429.
 */
export const FRAME_BURST_SECONDS = 2;

/** The bucket's tokens after `elapsedMs` more at `perSecond`, capped at the burst. */
export function refillBucket(tokens: number, elapsedMs: number, perSecond: number): number {
  return Math.min(perSecond * FRAME_BURST_SECONDS, tokens + (elapsedMs / 1000) * perSecond);
}
