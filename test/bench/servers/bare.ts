/**
 * The baselines the gateway is compared with, run as their own process like
 * the gateway:
 *
 *   fastify  Fastify 5 with @fastify/websocket, the same ws options as the
 *            gateway: a JSON POST route (no auth, no store) and GET /ws that
 *            sends one frame shaped like connection_established and nothing
 *            else; pings every HEARTBEAT_INTERVAL_MS like the ws mode.
 *   ws       a plain `ws` WebSocketServer on node:http that sends the same one
 *            frame and pings every HEARTBEAT_INTERVAL_MS (terminating a peer
 *            that missed a pong), the ws README's heartbeat.
 *
 * Prints `READY {"port":N}` once listening. Stops on SIGTERM or when MAX_LIFETIME_MS passes.
 */
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import fastifyWebsocket from "@fastify/websocket";
import Fastify from "fastify";
import { WebSocketServer, type WebSocket } from "ws";

const mode = process.argv[2] ?? "fastify";
const heartbeatMs = Number(process.env.HEARTBEAT_INTERVAL_MS ?? 25_000);
const maxLifetime = Number(process.env.MAX_LIFETIME_MS ?? 30 * 60_000);
setTimeout(() => process.exit(0), maxLifetime).unref();

function established(): string {
  return JSON.stringify({
    type: "connection_established",
    connection_id: randomUUID(),
    user_id: "bench-user-0000",
    session_expires_at: new Date(Date.now() + 3600_000).toISOString(),
    heartbeat_interval_ms: heartbeatMs,
    latest_seq: 0,
    epoch: "lx0000000-000000000000",
  });
}

async function fastifyMode(): Promise<number> {
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
  await app.register(fastifyWebsocket, {
    options: { maxPayload: 1024 * 1024, skipUTF8Validation: true, perMessageDeflate: false },
  });
  let n = 0;
  app.post("/bench/ticket", { bodyLimit: 1024 }, async (_request, reply) => {
    n++;
    return reply
      .code(201)
      .header("cache-control", "no-store")
      .send({ ticket: `bare-${n}`, expires_in: 30, expires_at: new Date(Date.now() + 30_000).toISOString() });
  });
  app.get("/ws", { websocket: true }, (socket: WebSocket) => {
    socket.send(established());
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  heartbeat(() => app.websocketServer.clients);
  process.once("SIGTERM", () => {
    for (const socket of app.websocketServer.clients) socket.terminate();
    void app.close().then(() => process.exit(0));
  });
  return (app.server.address() as { port: number }).port;
}

/** The ws README's heartbeat: ping everyone; terminate whoever did not answer the last one. */
function heartbeat(clients: () => Set<WebSocket>): void {
  const alive = new WeakMap<WebSocket, boolean>();
  const timer = setInterval(() => {
    for (const socket of clients()) {
      if (alive.get(socket) === false) {
        socket.terminate();
        continue;
      }
      if (!alive.has(socket)) socket.on("pong", () => alive.set(socket, true));
      alive.set(socket, false);
      socket.ping();
    }
  }, heartbeatMs);
  timer.unref();
}

async function wsMode(): Promise<number> {
  const server = createServer((_req, res) => {
    res.writeHead(426).end();
  });
  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 1024 * 1024, skipUTF8Validation: true });
  wss.on("connection", (socket) => {
    socket.on("error", () => undefined);
    socket.send(established());
  });
  heartbeat(() => wss.clients);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  process.once("SIGTERM", () => {
    for (const socket of wss.clients) socket.terminate();
    server.close(() => process.exit(0));
  });
  return (server.address() as { port: number }).port;
}

const port = mode === "ws" ? await wsMode() : await fastifyMode();
process.stdout.write(`READY ${JSON.stringify({ port, pid: process.pid })}\n`);
