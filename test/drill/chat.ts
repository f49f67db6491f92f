/**
 * Chat messages for the drills: an agent backend's webhook receiver that
 * verifies each hand-off with every secret it currently holds (Standard
 * Webhooks: during a rotation the backend accepts the old and the new key),
 * and a client that sends one chat_message as the SDK does: on a fresh
 * connection, sent again with the same message_id on a new connection when
 * its socket closes before the answer.
 */
import { createServer, type Server } from "node:http";
import { randomBytes, randomUUID } from "node:crypto";
import WebSocket from "ws";
import { Webhook } from "standardwebhooks";
import { ORIGIN, ticket } from "./lib.js";

/** A new `whsec_` key: base64 of 32 random bytes, as the Pulumi program generates. */
export const newWebhookSecret = (): string => `whsec_${randomBytes(32).toString("base64")}`;

export class WebhookReceiver {
  /** Hand-offs verified, by the label of the secret that verified them; "refused" for none. */
  readonly verified: Record<string, number> = {};
  private keys: Array<{ label: string; webhook: Webhook }> = [];
  private readonly seen = new Set<string>();
  duplicates = 0;

  private constructor(private readonly server: Server, readonly url: string) {}

  static async start(): Promise<WebhookReceiver> {
    let receiver: WebhookReceiver | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => res.writeHead(receiver!.receive(Buffer.concat(chunks).toString(), req.headers as Record<string, string>)).end());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    receiver = new WebhookReceiver(server, `http://127.0.0.1:${(server.address() as { port: number }).port}/webhook`);
    return receiver;
  }

  /** The secrets the backend verifies with from now on (`label` names each in the figures, never the value). */
  accept(secrets: Record<string, string>): void {
    this.keys = Object.entries(secrets).map(([label, secret]) => ({ label, webhook: new Webhook(secret) }));
  }

  /** 204 when some held secret verifies the signature (and the timestamp), 401 otherwise (the gateway says MESSAGE_REJECTED). */
  private receive(body: string, headers: Record<string, string>): number {
    const label = this.verifiedBy(body, headers);
    if (label === undefined) {
      this.verified.refused = (this.verified.refused ?? 0) + 1;
      return 401;
    }
    this.verified[label] = (this.verified[label] ?? 0) + 1;
    // Deduplicate by webhook-id, as a backend must: a resend is answered 2xx and not run again.
    if (this.seen.has(headers["webhook-id"]!)) this.duplicates++;
    this.seen.add(headers["webhook-id"]!);
    return 204;
  }

  /** The label of the first held secret that verifies the hand-off. */
  private verifiedBy(body: string, headers: Record<string, string>): string | undefined {
    for (const { label, webhook } of this.keys) {
      try {
        webhook.verify(body, headers);
        return label;
      } catch {
        // not this secret; the next one may verify it
      }
    }
    return undefined;
  }

  /** What the backend would answer a hand-off signed with `secret` (a rotation's "Confirm:"; not counted in `verified`). */
  probe(secret: string): number {
    const body = JSON.stringify({ message_id: "probe", text: "probe" });
    const at = new Date();
    const headers = { "webhook-id": "probe", "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": new Webhook(secret).sign("probe", at, body) };
    return this.verifiedBy(body, headers) === undefined ? 401 : 204;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * One chat message, sent as the SDK does: "ok" when acked, otherwise what went
 * wrong (an error frame's code, no answer). A socket that closes before the
 * answer (a drain) is replaced and the message sent again with the same id,
 * up to `attempts` times; `onResend` counts those.
 */
export async function sendChat(url: () => string, user: string, token: () => Promise<string>, onResend: () => void, attempts = 4): Promise<string> {
  const messageId = `drill-${randomUUID()}`;
  let outcome = "";
  for (let i = 0; i < attempts; i++) {
    if (i > 0) onResend();
    outcome = await chatOnce(url(), user, await token(), messageId);
    // Only a restart close is the SDK's cue to send again elsewhere; any other close is final.
    if (outcome !== "closed 4012" && outcome !== "closed 1012") return outcome;
  }
  return outcome;
}

async function chatOnce(url: string, user: string, token: string, messageId: string): Promise<string> {
  const t = await ticket(url, user, token).catch((err: Error) => ({ status: err.message, ticket: undefined }));
  if (t.status !== 201 || !t.ticket) return `ticket ${t.status}`;
  return new Promise<string>((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/ws?ticket=${t.ticket}`, { origin: ORIGIN, perMessageDeflate: false });
    const done = (outcome: string): void => {
      clearTimeout(timer);
      ws.removeAllListeners("close");
      ws.on("error", () => undefined);
      ws.close(1000);
      resolve(outcome);
    };
    const timer = setTimeout(() => done("no answer within 10 s"), 10_000);
    ws.on("error", () => undefined);
    ws.on("message", (data) => {
      const f = JSON.parse(data.toString()) as { type?: string; code?: string; message_id?: string; fatal?: boolean };
      if (f.type === "connection_established") {
        ws.send(JSON.stringify({ type: "chat_message", message_id: messageId, thread_id: "thread-drill", text: "drill" }));
      } else if (f.type === "ack" && f.message_id === messageId) {
        done("ok");
      } else if (f.type === "error" && f.message_id === messageId) {
        done(`refused ${f.code}`);
      }
      // A fatal error (SERVICE_RESTART on a drain) precedes the close, which decides.
    });
    ws.on("close", (code) => {
      clearTimeout(timer);
      resolve(`closed ${code}`);
    });
  });
}
