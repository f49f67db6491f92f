import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { createMemoryDedup, type Dedup } from "./dedup.js";
import { createGatewayApi, type GatewayApi } from "./gatewayApi.js";
import { runDemo, type RunInput } from "./run.js";

/**
 * An example agent backend: what a real one does with the gateway, and no
 * more. It is never imported by the gateway (service/src); `npm run dev`
 * starts it beside the gateway, and the tests run it as a real HTTP server.
 *
 * For each `POST /webhook` (docs/protocol.md §5a) it
 *   1. verifies the Standard Webhooks signature over the raw body (401 if it
 *      does not verify: a final refusal, the gateway does not retry),
 *   2. deduplicates by `webhook-id` (the chat message id): a copy of a
 *      message it already took is answered 200 and not run again,
 *   3. publishes the run's first event (agent_started) through the internal
 *      API and only then answers 202, so an accepted message is a started run;
 *      the rest of the run goes on in the background.
 * A message containing "/reject" is refused with 422 (to try the gateway's
 * MESSAGE_REJECTED path); one containing "/fail" ends its run with agent_error.
 *
 * Crash window, chosen on purpose: the id is recorded as started after
 * agent_started is published. A process killed between the two (one round
 * trip) starts that message again when its resend arrives; recording first
 * would instead lose the message if the process died before publishing. A
 * message is never lost, and one acked is never run again. The run itself
 * is not resumed after a crash (a real backend would keep it in a queue).
 */
export interface ExampleAgentOptions {
  /** The gateway's internal API (a function when the gateway starts after the agent). */
  readonly gatewayUrl: string | (() => string);
  readonly serviceSecret: string;
  /** `whsec_…`: the gateway's AGENT_WEBHOOK_SECRET. */
  readonly webhookSecret: string;
  /**
   * During a rotation of the webhook secret, the other key (old or new) that
   * also verifies a hand-off: the gateway's instances move from one key to the
   * other one at a time (docs/operations.md, "Rotate the agent webhook secret").
   */
  readonly webhookSecretPrevious?: string;
  /** 0: a free port. */
  readonly port?: number;
  readonly host?: string;
  readonly stepDelayMs?: number;
  /** Default: in memory (forgotten on restart). */
  readonly dedup?: Dedup;
  readonly serviceId?: string;
  readonly log?: (line: Record<string, unknown>) => void;
}

export interface ExampleAgent {
  /** The webhook's URL: the gateway's AGENT_WEBHOOK_URL. */
  readonly webhookUrl: string;
  readonly server: Server;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 256 * 1024;

export async function startExampleAgent(options: ExampleAgentOptions): Promise<ExampleAgent> {
  const webhooks = [options.webhookSecret, ...(options.webhookSecretPrevious ? [options.webhookSecretPrevious] : [])].map((key) => new Webhook(key));
  const dedup = options.dedup ?? createMemoryDedup();
  const shutdown = new AbortController();
  const api = createGatewayApi({
    gatewayUrl: options.gatewayUrl,
    serviceSecret: options.serviceSecret,
    serviceId: options.serviceId ?? "example-agent",
    signal: shutdown.signal,
  });
  const log = options.log ?? ((line) => process.stdout.write(`${JSON.stringify(line)}\n`));
  const runs = new Set<Promise<void>>();
  const context = { api, dedup, webhooks, stepDelayMs: options.stepDelayMs ?? 400, signal: shutdown.signal, log, runs };

  const server = createServer((req, res) => {
    handle(context, req, res).catch((err: unknown) => {
      log({ event: "webhook_failed", error: err instanceof Error ? err.message : String(err) });
      if (!res.headersSent) reply(res, 503, { error: "internal error; retry" });
    });
  });
  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    webhookUrl: `http://${host.includes(":") ? `[${host}]` : host}:${port}/webhook`,
    server,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      shutdown.abort();
      await Promise.allSettled([...runs]);
      await dedup.close();
    },
  };
}

interface Context {
  readonly api: GatewayApi;
  readonly dedup: Dedup;
  readonly webhooks: readonly Webhook[];
  readonly stepDelayMs: number;
  readonly signal: AbortSignal;
  readonly log: (line: Record<string, unknown>) => void;
  readonly runs: Set<Promise<void>>;
}

async function handle(ctx: Context, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== "POST" || req.url !== "/webhook") return reply(res, 404, { error: "POST /webhook" });
  const body = await readBody(req);
  if (body === undefined) return reply(res, 413, { error: "body too large" });
  // Verify over the raw bytes, before parsing: re-serialised JSON would not match the signature.
  let input: RunInput;
  try {
    input = parseMessage(verifyWithAny(ctx.webhooks, body, headersOf(req)));
  } catch (err) {
    if (err instanceof WebhookVerificationError) return reply(res, 401, { error: "signature does not verify" });
    return reply(res, 400, { error: err instanceof Error ? err.message : "bad body" });
  }
  if (/\/reject\b/.test(input.text)) return reply(res, 422, { error: "this agent refuses messages containing /reject" });

  const claim = await ctx.dedup.claim(input.message_id);
  if (claim === "started") return reply(res, 200, { duplicate: true });
  if (claim === "busy") return reply(res, 503, { error: "this message is already being taken; retry" });
  const runId = randomUUID();
  try {
    await ctx.api.publish(input.user_id, { type: "agent_started", run_id: runId, thread_id: input.thread_id, data: startedData(input) });
    await ctx.dedup.markStarted(input.message_id);
  } catch (err) {
    await ctx.dedup.release(input.message_id).catch(() => undefined);
    throw err;
  }
  reply(res, 202, { run_id: runId });
  const run = runDemo(ctx, input, runId)
    .catch((err: unknown) => ctx.log({ event: "run_failed", run_id: runId, error: err instanceof Error ? err.message : String(err) }))
    .finally(() => ctx.runs.delete(run));
  ctx.runs.add(run);
}

function startedData(input: RunInput): Record<string, unknown> {
  return { agent: "example-assistant", input: input.text.trim().slice(0, 80), message_id: input.message_id };
}

function parseMessage(value: unknown): RunInput {
  const v = value as Record<string, unknown>;
  for (const field of ["message_id", "user_id", "thread_id", "text"] as const) {
    if (typeof v?.[field] !== "string" || v[field] === "") throw new Error(`${field} must be a non-empty string`);
  }
  return { message_id: v.message_id as string, user_id: v.user_id as string, thread_id: v.thread_id as string, text: v.text as string };
}

/** The payload, when one of the keys verifies the signature; else the first key's verification error. */
function verifyWithAny(webhooks: readonly Webhook[], body: string, headers: Record<string, string>): unknown {
  let first: unknown;
  for (const webhook of webhooks) {
    try {
      return webhook.verify(body, headers);
    } catch (err) {
      first ??= err;
    }
  }
  throw first;
}

function headersOf(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
    const value = req.headers[name];
    if (typeof value === "string") out[name] = value;
  }
  return out;
}

async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}
