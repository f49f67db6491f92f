import { Webhook } from "standardwebhooks";

/** The JSON body POSTed to the agent backend. */
export interface AgentWebhookBody {
  readonly message_id: string;
  readonly user_id: string;
  readonly thread_id: string;
  readonly text: string;
  readonly received_at: string;
  readonly connection_id: string;
}

/** How one POST ended: only a 2xx in time is "accepted", only a 4xx is "rejected" (docs/protocol.md §5a). */
export type PostResult =
  | { readonly outcome: "accepted"; readonly status: number }
  | { readonly outcome: "rejected"; readonly status: number }
  | { readonly outcome: "unavailable"; readonly reason: "timeout" | "network" | "redirect" | "server_error" | "shutdown"; readonly status?: number };

/** The abort reason of a shutdown, told apart from the timeout's. */
const SHUTDOWN = new Error("shutdown");

/**
 * The agent backend's webhook (AGENT_WEBHOOK_URL): one POST per hand-off,
 * signed per the Standard Webhooks specification with the message id as
 * `webhook-id`, bounded by `timeoutMs`, and all of them ended at once on shutdown.
 */
export class AgentWebhook {
  private readonly signer: Webhook;
  private readonly running = new Set<AbortController>();

  constructor(
    private readonly url: string,
    secret: string,
    private readonly timeoutMs: number,
    private readonly now: () => number,
  ) {
    this.signer = new Webhook(secret);
  }

  /** POSTs the body and says how it ended; never rejects. */
  async post(body: AgentWebhookBody): Promise<PostResult> {
    const payload = JSON.stringify(body);
    const sentAt = new Date(this.now());
    const abort = new AbortController();
    this.running.add(abort);
    const timer = setTimeout(() => abort.abort(new Error("timeout")), this.timeoutMs);
    try {
      const response = await fetch(this.url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "webhook-id": body.message_id,
          "webhook-timestamp": String(Math.floor(sentAt.getTime() / 1000)),
          "webhook-signature": this.signer.sign(body.message_id, sentAt, payload),
        },
        body: payload,
        // A redirect is not an acceptance, and following it would send the signed body somewhere unconfigured.
        redirect: "manual",
        signal: abort.signal,
      });
      // The body means nothing to the gateway; dropping it frees the connection for the next hand-off.
      await response.body?.cancel().catch(() => undefined);
      return resultOfStatus(response.status);
    } catch {
      // The error may name the URL (which can hold a token): only its kind is kept.
      const reason = abort.signal.aborted ? (abort.signal.reason === SHUTDOWN ? "shutdown" : "timeout") : "network";
      return { outcome: "unavailable", reason };
    } finally {
      clearTimeout(timer);
      this.running.delete(abort);
    }
  }

  /** Ends every POST in flight; each resolves "unavailable" with reason "shutdown". */
  abortAll(): void {
    for (const abort of this.running) abort.abort(SHUTDOWN);
  }
}

function resultOfStatus(status: number): PostResult {
  if (status >= 200 && status < 300) return { outcome: "accepted", status };
  if (status >= 400 && status < 500) return { outcome: "rejected", status };
  return { outcome: "unavailable", reason: status >= 300 && status < 400 ? "redirect" : "server_error", status };
}
