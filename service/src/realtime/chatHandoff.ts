import type { FastifyBaseLogger } from "fastify";
import { Webhook } from "standardwebhooks";
import type { Config } from "../config.js";
import type { ErrorCode } from "../errors.js";
import type { Metrics } from "../plugins/metrics.js";
import { StoreUnavailableError, type Store } from "../plugins/store/types.js";
import { errorFrame, type ClientFrame } from "./frames.js";

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

/** The JSON body POSTed to the agent backend. */
export interface AgentWebhookBody {
  readonly message_id: string;
  readonly user_id: string;
  readonly thread_id: string;
  readonly text: string;
  readonly received_at: string;
  readonly connection_id: string;
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

type PostResult =
  | { readonly outcome: "accepted"; readonly status: number }
  | { readonly outcome: "rejected"; readonly status: number }
  | { readonly outcome: "unavailable"; readonly reason: "timeout" | "network" | "redirect" | "server_error" | "shutdown"; readonly status?: number };

export function createChatHandoff(deps: ChatHandoffDeps) {
  const { url, secret, timeoutMs, maxInFlight, maxInFlightPerUser, rememberedPerUser } = deps.webhook;
  const now = deps.now ?? Date.now;
  const signer = url !== undefined && secret !== undefined ? new Webhook(secret) : undefined;
  // A claim outlives any hand-off that could still be running (it ends at timeoutMs), so it is only
  // taken over from an instance that died mid-hand-off.
  const claimStaleMs = timeoutMs + 2000;
  const perUser = new Map<string, number>();
  const running = new Set<AbortController>();
  let inFlight = 0;

  const count = (outcome: string) => deps.metrics.agentHandoffs.inc({ outcome });

  async function post(body: AgentWebhookBody): Promise<PostResult> {
    const payload = JSON.stringify(body);
    const sentAt = new Date(now());
    const abort = new AbortController();
    running.add(abort);
    const timer = setTimeout(() => abort.abort(new Error("timeout")), timeoutMs);
    try {
      const response = await fetch(url!, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "webhook-id": body.message_id,
          "webhook-timestamp": String(Math.floor(sentAt.getTime() / 1000)),
          "webhook-signature": signer!.sign(body.message_id, sentAt, payload),
        },
        body: payload,
        // A redirect is not an acceptance, and following it would send the signed body somewhere unconfigured.
        redirect: "manual",
        signal: abort.signal,
      });
      // The body means nothing to the gateway; dropping it frees the connection for the next hand-off.
      await response.body?.cancel().catch(() => undefined);
      const status = response.status;
      if (status >= 200 && status < 300) return { outcome: "accepted", status };
      if (status >= 400 && status < 500) return { outcome: "rejected", status };
      return { outcome: "unavailable", reason: status >= 300 && status < 400 ? "redirect" : "server_error", status };
    } catch {
      // The error may name the URL (which can hold a token): only its kind is kept.
      const reason = abort.signal.aborted ? (abort.signal.reason === SHUTDOWN ? "shutdown" : "timeout") : "network";
      return { outcome: "unavailable", reason };
    } finally {
      clearTimeout(timer);
      running.delete(abort);
    }
  }

  /** Hands the message off and answers the client; never rejects for the backend's or the store's faults. */
  async function handOff(conn: ChatSender, frame: ChatMessageFrame, receivedAt: number): Promise<void> {
    const refuse = (code: ErrorCode, message?: string) => conn.send(errorFrame(code, { fatal: false, message, extra: { message_id: frame.message_id } }));
    // The id travels as the webhook-id header: one that no HTTP header can carry would fail every
    // attempt, and the client would resend it forever. Final, so the SDK drops it.
    if (!HEADER_SAFE_ID.test(frame.message_id)) {
      count("rejected");
      return void refuse("MESSAGE_REJECTED", "message_id must be printable ASCII (it is the webhook-id of the hand-off); this message will not be run.");
    }
    let claim;
    try {
      claim = await deps.store.claimMessage(conn.userId, frame.message_id, { ttlMs: ACCEPTED_TTL_MS, staleMs: claimStaleMs });
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      count("store_unavailable");
      return void refuse("TICKET_STORE_UNAVAILABLE", "The message was not accepted; send it again shortly.");
    }
    if (claim === "started") {
      count("duplicate");
      return void conn.send({ type: "ack", message_id: frame.message_id });
    }
    if (claim === "pending") {
      count("pending");
      return void refuse("AGENT_UNAVAILABLE", "An earlier copy of this message is still being handed to the agent. It was not acked; send it again shortly.");
    }
    const started = now();
    const result = await post({
      message_id: frame.message_id,
      user_id: conn.userId,
      thread_id: frame.thread_id,
      text: frame.text,
      received_at: new Date(receivedAt).toISOString(),
      connection_id: conn.id,
    });
    const line = { event: "agent_handoff", connection_id: conn.id, ms: now() - started, ...result };
    count(result.outcome);
    if (result.outcome === "accepted") {
      deps.log.debug(line, "chat message handed to the agent backend");
      // Best effort: should it fail, a resend is handed off again and the backend deduplicates it by webhook-id.
      await deps.store.markMessageStarted(conn.userId, frame.message_id, { ttlMs: ACCEPTED_TTL_MS, maxPerUser: rememberedPerUser }).catch(() => undefined);
      conn.send({ type: "ack", message_id: frame.message_id });
      return;
    }
    deps.log.warn(line, result.outcome === "rejected" ? "the agent backend refused a chat message" : "the agent backend did not accept a chat message");
    await deps.store.releaseMessage(conn.userId, frame.message_id).catch(() => undefined);
    if (result.outcome === "rejected") {
      refuse("MESSAGE_REJECTED", `The agent backend refused this message (HTTP ${result.status}). It will not be run; do not send it again.`);
    } else {
      refuse("AGENT_UNAVAILABLE", `The agent backend did not accept the message (${result.reason.replace("_", " ")}). It was not acked; send it again shortly.`);
    }
  }

  return {
    /** True when AGENT_WEBHOOK_URL is set. */
    enabled: signer !== undefined,

    /** Answers one chat_message: ack, or a non-fatal error frame naming its message_id. */
    async handle(conn: ChatSender, frame: ChatMessageFrame): Promise<void> {
      const receivedAt = now();
      if (signer === undefined) {
        count("chat_unavailable");
        conn.send(errorFrame("CHAT_UNAVAILABLE", { fatal: false, extra: { message_id: frame.message_id } }));
        return;
      }
      const mine = perUser.get(conn.userId) ?? 0;
      if (inFlight >= maxInFlight || mine >= maxInFlightPerUser) {
        count("rate_limited");
        const message = "Too many messages are being handed to the agent at once. It was not acked; send it again shortly.";
        conn.send(errorFrame("RATE_LIMITED", { fatal: false, message, extra: { message_id: frame.message_id } }));
        return;
      }
      inFlight++;
      perUser.set(conn.userId, mine + 1);
      try {
        await handOff(conn, frame, receivedAt);
      } finally {
        inFlight--;
        const left = (perUser.get(conn.userId) ?? 1) - 1;
        if (left > 0) perUser.set(conn.userId, left);
        else perUser.delete(conn.userId);
      }
    },

    /** Hand-offs in flight on this instance. */
    get inFlight(): number {
      return inFlight;
    },

    /** Ends the hand-offs in flight (their clients are told "not accepted" and resend elsewhere). */
    close(): void {
      for (const abort of running) abort.abort(SHUTDOWN);
    },
  };
}

const SHUTDOWN = new Error("shutdown");
/** Printable ASCII, no spaces: safe in an HTTP header and in the signed `id.timestamp.body` content. */
const HEADER_SAFE_ID = /^[\x21-\x7e]+$/;
