/**
 * The gateway's internal API as an agent backend calls it (docs/protocol.md
 * §5): one event per call, or up to 500 in one batch. A 503 or a network
 * error means "not published, try again" (the gateway or its store is
 * restarting), so both are retried with backoff for up to `retryForMs`; any
 * other error is the caller's mistake and is thrown at once.
 */
export interface AgentEvent {
  readonly type: "agent_started" | "agent_thinking" | "tool_executing" | "tool_completed" | "agent_completed" | "agent_error";
  readonly run_id: string;
  readonly thread_id: string;
  readonly data: Record<string, unknown>;
}

export type BatchResult = { seq: number; event_id: string } | { error: { code: string; message: string } };

export interface GatewayApiOptions {
  /** http://127.0.0.1:8080 (any instance: events reach the user's sockets on every one); a function when it is only known later. */
  readonly gatewayUrl: string | (() => string);
  readonly serviceSecret: string;
  /** Sent as X-Service-Id. */
  readonly serviceId: string;
  /** How long a publish is retried while the gateway answers 503 or cannot be reached. Default 30 s. */
  readonly retryForMs?: number;
  readonly signal?: AbortSignal;
}

export class GatewayApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`gateway answered ${status} ${code}: ${message}`);
    this.name = "GatewayApiError";
  }
}

export type GatewayApi = ReturnType<typeof createGatewayApi>;

export function createGatewayApi(options: GatewayApiOptions) {
  const retryForMs = options.retryForMs ?? 30_000;
  const headers = {
    authorization: `Bearer ${options.serviceSecret}`,
    "x-service-id": options.serviceId,
    "content-type": "application/json",
  };

  async function call<T>(path: string, body: unknown): Promise<T> {
    const deadline = Date.now() + retryForMs;
    for (let attempt = 0; ; attempt++) {
      let retryable: unknown;
      try {
        const base = typeof options.gatewayUrl === "function" ? options.gatewayUrl() : options.gatewayUrl;
        const res = await fetch(`${base}${path}`, { method: "POST", headers, body: JSON.stringify(body), signal: options.signal });
        const text = await res.text();
        if (res.ok) return JSON.parse(text) as T;
        const error = (JSON.parse(text || "{}") as { error?: { code?: string; message?: string } }).error ?? {};
        const failure = new GatewayApiError(res.status, error.code ?? "UNKNOWN", error.message ?? "");
        if (res.status !== 503) throw failure;
        retryable = failure;
      } catch (err) {
        if (err instanceof GatewayApiError && err.status !== 503) throw err;
        if (options.signal?.aborted) throw err;
        retryable = err;
      }
      const wait = Math.min(100 * 2 ** attempt, 2000);
      if (Date.now() + wait > deadline) throw retryable;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  return {
    /** POST /internal/v1/users/{user_id}/events: one event, its seq once stored. */
    publish(userId: string, event: AgentEvent): Promise<{ seq: number; event_id: string }> {
      return call(`/internal/v1/users/${encodeURIComponent(userId)}/events`, event);
    },
    /** POST /internal/v1/events: up to 500 events of any users; one result per item, in order. */
    async publishBatch(items: ReadonlyArray<AgentEvent & { user_id: string }>): Promise<BatchResult[]> {
      return (await call<{ results: BatchResult[] }>("/internal/v1/events", items)).results;
    },
  };
}
