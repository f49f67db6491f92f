import type { FastifyBaseLogger } from "fastify";
import type { Config } from "../config.js";
import type { ErrorCode } from "../errors.js";
import type { Metrics } from "../plugins/metrics.js";
import { StoreUnavailableError, type Store } from "../plugins/store/types.js";
import { AgentWebhook, type PostResult } from "./agentWebhook.js";
import { errorFrame, type ClientFrame } from "./frames.js";

export type { AgentWebhookBody } from "./agentWebhook.js";

/**
 * Hands each `chat_message` to the agent backend (docs/protocol.md §5a): a
 * POST to AGENT_WEBHOOK_URL signed per the Standard Webhooks specification,
 * with the message id as `webhook-id`, so the backend can deduplicate resends.
 *
 * The client's `ack` means exactly "the backend answered 2xx in time". Every
 * other answer leaves the message unacked and says so in a non-fatal error
 * frame naming the message id: a timeout, a network error, a 3xx, a 5xx or a
 * reply that is not HTTP at all is AGENT_UNAVAILABLE (the SDK sends it again,
 * with the same id); a 4xx is MESSAGE_REJECTED (final, not retried). So
 * nothing is acked that the backend did not take, and nothing taken is run
 * twice as long as the backend deduplicates by `webhook-id`.
 *
 * The gateway also remembers, per user, the ids the backend accepted
 * (bounded, see Store.markMessageStarted), so a resend after a lost ack is
 * acked without a second hand-off, and it claims an id while its hand-off is
 * in flight, so two instances do not hand off the same resend at once.
 */
export type ChatMessageFrame = Extract<ClientFrame, { type: "chat_message" }>;

/** What the hand-off needs of a connection. */
export interface ChatSender {
  readonly id: string;
  readonly userId: string;
  send(frame: string | object): boolean;
}

export interface ChatHandoffDeps {
  readonly webhook: Config["agentWebhook"];
  readonly store: Store;
  readonly metrics: Metrics;
  readonly log: FastifyBaseLogger;
  readonly now?: () => number;
}

export type ChatHandoff = ReturnType<typeof createChatHandoff>;

/** How long an accepted message id is remembered (among the user's newest MESSAGE_IDS_PER_USER). */
const ACCEPTED_TTL_MS = 24 * 3600 * 1000;

export function createChatHandoff(deps: ChatHandoffDeps) {
  const { url, secret, timeoutMs, maxInFlight, maxInFlightPerUser, rememberedPerUser } = deps.webhook;
  const now = deps.now ?? Date.now;
  const count = (outcome: string) => deps.metrics.agentHandoffs.inc({ outcome });
  const webhook = url !== undefined && secret !== undefined ? new AgentWebhook(url, secret, timeoutMs, now) : undefined;
  const context: HandOffContext | undefined = webhook && {
    webhook,
    store: deps.store,
    log: deps.log,
    now,
    count,
    // A claim outlives any hand-off that could still be running (it ends at timeoutMs), so it is only
    // taken over from an instance that died mid-hand-off.
    claimStaleMs: timeoutMs + 2000,
    rememberedPerUser,
  };
  const limit = new InFlightLimit(maxInFlight, maxInFlightPerUser);

  return {
    /** True when AGENT_WEBHOOK_URL is set. */
    enabled: webhook !== undefined,

    /** Answers one chat_message: ack, or a non-fatal error frame naming its message_id. */
    async handle(conn: ChatSender, frame: ChatMessageFrame): Promise<void> {
      const receivedAt = now();
      if (context === undefined) {
        count("chat_unavailable");
        conn.send(errorFrame("CHAT_UNAVAILABLE", { fatal: false, extra: { message_id: frame.message_id } }));
        return;
      }
      if (!limit.tryAcquire(conn.userId)) {
        count("rate_limited");
        const message = "Too many messages are being handed to the agent at once. It was not acked; send it again shortly.";
        conn.send(errorFrame("RATE_LIMITED", { fatal: false, message, extra: { message_id: frame.message_id } }));
        return;
      }
      try {
        await handOff(context, conn, frame, receivedAt);
      } finally {
        limit.release(conn.userId);
      }
    },

    /** Hand-offs in flight on this instance. */
    get inFlight(): number {
      return limit.total;
    },

    /** Ends the hand-offs in flight (their clients are told "not accepted" and resend elsewhere). */
    close(): void {
      webhook?.abortAll();
    },
  };
}

/** What one hand-off needs, fixed for the life of the gateway. */
interface HandOffContext {
  readonly webhook: AgentWebhook;
  readonly store: Store;
  readonly log: FastifyBaseLogger;
  readonly now: () => number;
  readonly count: (outcome: string) => void;
  readonly claimStaleMs: number;
  readonly rememberedPerUser: number;
}

/** Sends the client a non-fatal error frame naming the message. */
type Refuse = (code: ErrorCode, message?: string) => void;

/** Hands the message off and answers the client; never rejects for the backend's or the store's faults. */
async function handOff(ctx: HandOffContext, conn: ChatSender, frame: ChatMessageFrame, receivedAt: number): Promise<void> {
  const refuse: Refuse = (code, message) => void conn.send(errorFrame(code, { fatal: false, message, extra: { message_id: frame.message_id } }));
  // The id travels as the webhook-id header: one that no HTTP header can carry would fail every
  // attempt, and the client would resend it forever. Final, so the SDK drops it.
  if (!HEADER_SAFE_ID.test(frame.message_id)) {
    ctx.count("rejected");
    return refuse("MESSAGE_REJECTED", "message_id must be printable ASCII (it is the webhook-id of the hand-off); this message will not be run.");
  }
  if (!(await claimForHandOff(ctx, conn, frame, refuse))) return;
  const started = ctx.now();
  const result = await ctx.webhook.post({
    message_id: frame.message_id,
    user_id: conn.userId,
    thread_id: frame.thread_id,
    text: frame.text,
    received_at: new Date(receivedAt).toISOString(),
    connection_id: conn.id,
  });
  await settleHandOff(ctx, conn, frame, result, ctx.now() - started, refuse);
}

/**
 * Claims the message id for this hand-off. False when the client was already answered: the
 * backend took the id before (a resend after a lost ack: acked again), another hand-off of it is
 * in flight, or the store is unreachable.
 */
async function claimForHandOff(ctx: HandOffContext, conn: ChatSender, frame: ChatMessageFrame, refuse: Refuse): Promise<boolean> {
  let claim;
  try {
    claim = await ctx.store.claimMessage(conn.userId, frame.message_id, { ttlMs: ACCEPTED_TTL_MS, staleMs: ctx.claimStaleMs });
  } catch (err) {
    if (!(err instanceof StoreUnavailableError)) throw err;
    ctx.count("store_unavailable");
    refuse("TICKET_STORE_UNAVAILABLE", "The message was not accepted; send it again shortly.");
    return false;
  }
  if (claim === "started") {
    ctx.count("duplicate");
    conn.send({ type: "ack", message_id: frame.message_id });
    return false;
  }
  if (claim === "pending") {
    ctx.count("pending");
    refuse("AGENT_UNAVAILABLE", "An earlier copy of this message is still being handed to the agent. It was not acked; send it again shortly.");
    return false;
  }
  return true;
}

/** After the POST: remembers an accepted id (or releases the claim), logs, and answers the client. */
async function settleHandOff(ctx: HandOffContext, conn: ChatSender, frame: ChatMessageFrame, result: PostResult, ms: number, refuse: Refuse): Promise<void> {
  const line = { event: "agent_handoff", connection_id: conn.id, ms, ...result };
  ctx.count(result.outcome);
  if (result.outcome === "accepted") {
    ctx.log.debug(line, "chat message handed to the agent backend");
    // Best effort: should it fail, a resend is handed off again and the backend deduplicates it by webhook-id.
    await ctx.store
      .markMessageStarted(conn.userId, frame.message_id, { ttlMs: ACCEPTED_TTL_MS, maxPerUser: ctx.rememberedPerUser })
      .catch(() => undefined);
    conn.send({ type: "ack", message_id: frame.message_id });
    return;
  }
  ctx.log.warn(line, result.outcome === "rejected" ? "the agent backend refused a chat message" : "the agent backend did not accept a chat message");
  await ctx.store.releaseMessage(conn.userId, frame.message_id).catch(() => undefined);
  if (result.outcome === "rejected") {
    refuse("MESSAGE_REJECTED", `The agent backend refused this message (HTTP ${result.status}). It will not be run; do not send it again.`);
  } else {
    refuse("AGENT_UNAVAILABLE", `The agent backend did not accept the message (${result.reason.replace("_", " ")}). It was not acked; send it again shortly.`);
  }
}

/**
 * The bounds on hand-offs in flight: on this instance (each holds a socket to the backend),
 * and per user, so that one user cannot take every slot.
 */
class InFlightLimit {
  private readonly perUser = new Map<string, number>();
  private running = 0;

  constructor(
    private readonly max: number,
    private readonly maxPerUser: number,
  ) {}

  get total(): number {
    return this.running;
  }

  /** Takes a slot for the user; false (and nothing taken) when either bound is reached. */
  tryAcquire(userId: string): boolean {
    const mine = this.perUser.get(userId) ?? 0;
    if (this.running >= this.max || mine >= this.maxPerUser) return false;
    this.running++;
    this.perUser.set(userId, mine + 1);
    return true;
  }

  release(userId: string): void {
    this.running--;
    const left = (this.perUser.get(userId) ?? 1) - 1;
    if (left > 0) this.perUser.set(userId, left);
    else this.perUser.delete(userId);
  }
}

/** Printable ASCII, no spaces: safe in an HTTP header and in the signed `id.timestamp.body` content. */
const HEADER_SAFE_ID = /^[\x21-\x7e]+$/;
