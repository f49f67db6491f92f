import type { FastifyInstance } from "fastify";
import { ERRORS, GatewayError, isGatewayError, MESSAGES, type ErrorCode } from "../errors.js";
import { AGENT_EVENT_TYPES, type AgentEventType } from "../plugins/store/types.js";
import { MAX_DATA_DEPTH, nestsDeeperThan, type PublishRequest } from "../realtime/events.js";

/**
 * POST /internal/v1/events (docs/protocol.md §5): up to 500 agent events for
 * any users in one body, `[{user_id, type, run_id, thread_id, data}]`.
 *
 * Agent backends stream many small events (thinking tokens, tool progress);
 * one request per event costs a request and a store round trip each. Here
 * the items are grouped by user and each user's items are published in one
 * store step (contiguous seqs, in the order given), all users at once, so a
 * batch costs one round trip per user, pipelined.
 *
 * The answer is 207 with one result per item, in order: `{seq, event_id}`, or
 * `{error: {code, message}}` with the code the single-event route would give
 * (BAD_REQUEST, BODY_TOO_LARGE, TICKET_STORE_UNAVAILABLE). One bad item fails
 * alone. Only a body that is not a batch at all (not a JSON array, empty,
 * more than 500 items, over the size limit) is refused whole, with the usual
 * error shape. Registered inside internalRoutes, so the same authentication
 * applies.
 */
const MAX_BATCH_ITEMS = 500;
/** 500 items of a few KiB each; a single item is held to the single route's 64 KiB. */
const MAX_BATCH_BODY_BYTES = 2 * 1024 * 1024;
const MAX_ITEM_BYTES = 64 * 1024;
const FIELDS = new Set(["user_id", "type", "run_id", "thread_id", "data"]);
const EVENT_TYPES: ReadonlySet<string> = new Set(AGENT_EVENT_TYPES);

type ItemResult = { seq: number; event_id: string } | { error: { code: ErrorCode; message: string } };
type Item = { userId: string; request: PublishRequest };

export async function internalBatchRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: unknown }>("/internal/v1/events", { bodyLimit: MAX_BATCH_BODY_BYTES }, async (request, reply) => {
    const body = request.body;
    if (!Array.isArray(body)) throw new GatewayError("BAD_REQUEST", { message: "The body must be a JSON array of events: [{user_id, type, run_id, thread_id, data}]." });
    if (body.length === 0) throw new GatewayError("BAD_REQUEST", { message: "The batch is empty." });
    if (body.length > MAX_BATCH_ITEMS) {
      throw new GatewayError("BAD_REQUEST", { message: `The batch holds ${body.length} events; at most ${MAX_BATCH_ITEMS} per request.` });
    }
    const results: ItemResult[] = new Array(body.length);
    const byUser = new Map<string, number[]>();
    const items = body.map((raw, i) => {
      const checked = checkItem(raw);
      if ("error" in checked) {
        results[i] = checked;
        return undefined;
      }
      const indexes = byUser.get(checked.userId);
      if (indexes === undefined) byUser.set(checked.userId, [i]);
      else indexes.push(i);
      return checked;
    });

    await Promise.all(
      [...byUser].map(async ([userId, indexes]) => {
        try {
          const published = await app.publisher.publishMany(userId, indexes.map((i) => items[i]!.request));
          indexes.forEach((i, k) => (results[i] = published[k]!));
        } catch (err) {
          if (!isGatewayError(err)) throw err;
          for (const i of indexes) results[i] = { error: { code: err.code, message: err.message } };
        }
      }),
    );
    const failed = results.filter((r) => "error" in r).length;
    request.log.debug({ event: "events_published", service_id: request.headers["x-service-id"], items: body.length, users: byUser.size, failed }, "batch published");
    return reply.code(207).send({ results });
  });
}

/** The single route's schema, item by item: the same fields, types and limits, and the same error codes. */
function checkItem(raw: unknown): Item | { error: { code: ErrorCode; message: string } } {
  const bad = (message: string, code: ErrorCode = "BAD_REQUEST") => ({ error: { code, message: `${MESSAGES[code]} ${message}` } });
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return bad("An event is a JSON object.");
  const item = raw as Record<string, unknown>;
  const extra = Object.keys(item).filter((key) => !FIELDS.has(key));
  // The gateway assigns seq and event_id: a publisher that sends them learns it does not choose them.
  if (extra.length > 0) return bad(`Unknown field(s): ${extra.slice(0, 5).join(", ")}; an event has user_id, type, run_id, thread_id and data.`);
  if (!isString(item.user_id, 256)) return bad("user_id must be a string of 1 to 256 characters.");
  if (typeof item.type !== "string" || !EVENT_TYPES.has(item.type)) return bad(`type must be one of ${AGENT_EVENT_TYPES.join(", ")}.`);
  if (!isString(item.run_id, 128)) return bad("run_id must be a string of 1 to 128 characters.");
  if (!isString(item.thread_id, 128)) return bad("thread_id must be a string of 1 to 128 characters.");
  if (item.data !== undefined && (typeof item.data !== "object" || item.data === null || Array.isArray(item.data))) return bad("data must be a JSON object.");
  if (item.data !== undefined && nestsDeeperThan(item.data, MAX_DATA_DEPTH)) return bad(`data may nest at most ${MAX_DATA_DEPTH} levels deep.`);
  if (Buffer.byteLength(JSON.stringify(item)) > MAX_ITEM_BYTES) return bad(`An event takes at most ${MAX_ITEM_BYTES} bytes as JSON.`, "BODY_TOO_LARGE");
  return {
    userId: item.user_id,
    request: { type: item.type as AgentEventType, run_id: item.run_id, thread_id: item.thread_id, data: (item.data as Record<string, unknown> | undefined) ?? {} },
  };
}

function isString(value: unknown, maxLength: number): value is string {
  return typeof value === "string" && value.length >= 1 && value.length <= maxLength;
}
