/**
 * The Socket.IO 4 comparison server, built to do the same job as the
 * gateway as plainly as Socket.IO allows:
 *
 *   - WebSocket transport only (no long-polling), no compression.
 *   - An auth middleware that verifies the same HS256 user JWT with jose
 *     (same call, same key handling as the gateway) and joins `user:<sub>`.
 *   - POST /internal/v1/users/:user_id/events on Fastify (same HTTP stack as
 *     the gateway), checking the service secret in constant time and the
 *     body with the same JSON schema, then `io.to("user:<id>").emit("event")`.
 *     It numbers each user's events in memory (`seq`, returned in the 202)
 *     so clients can check they got every one; it stores nothing.
 *   - REDIS_URL set: @socket.io/redis-adapter (pub/sub) across instances.
 *   - CSR=1: connection state recovery (in-memory adapter; the pub/sub Redis
 *     adapter does not support it), Socket.IO's defaults: 2 min, middlewares
 *     skipped on a recovered connection.
 *
 * Prints `READY {"port":N}` once listening. Ends on SIGTERM or after MAX_LIFETIME_MS.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createAdapter } from "@socket.io/redis-adapter";
import Fastify from "fastify";
import { Redis } from "ioredis";
import { jwtVerify } from "jose";
import { Server } from "socket.io";

const jwtKey = new TextEncoder().encode(process.env.JWT_SECRET_KEY ?? "");
const serviceSecret = createHash("sha256").update(process.env.SERVICE_SECRET ?? "").digest();
const heartbeatMs = Number(process.env.HEARTBEAT_INTERVAL_MS ?? 25_000);
setTimeout(() => process.exit(0), Number(process.env.MAX_LIFETIME_MS ?? 30 * 60_000)).unref();

const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
const io = new Server(app.server, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  pingInterval: heartbeatMs,
  pingTimeout: 20_000,
  maxHttpBufferSize: 1024 * 1024,
  ...(process.env.CSR === "1" ? { connectionStateRecovery: { maxDisconnectionDuration: 2 * 60_000, skipMiddlewares: true } } : {}),
});
let pub: Redis | undefined;
let sub: Redis | undefined;
if (process.env.REDIS_URL) {
  pub = new Redis(process.env.REDIS_URL);
  sub = pub.duplicate();
  io.adapter(createAdapter(pub, sub));
}

io.use((socket, next) => {
  const token = (socket.handshake.auth as { token?: unknown }).token;
  if (typeof token !== "string") return next(new Error("TOKEN_MISSING"));
  jwtVerify(token, jwtKey, { algorithms: ["HS256"], requiredClaims: ["sub", "exp"], clockTolerance: 5 }).then(
    ({ payload }) => {
      (socket.data as { sub?: string }).sub = payload.sub;
      next();
    },
    () => next(new Error("TOKEN_INVALID")),
  );
});
io.on("connection", (socket) => {
  const sub = (socket.data as { sub: string }).sub;
  if (!socket.recovered) void socket.join(`user:${sub}`);
  socket.emit("established", { user_id: sub, recovered: socket.recovered });
});

const seqs = new Map<string, number>();
const ID = { type: "string", minLength: 1, maxLength: 128 } as const;
app.post<{ Params: { user_id: string }; Body: { type: string; run_id: string; thread_id: string; data?: Record<string, unknown> } }>(
  "/internal/v1/users/:user_id/events",
  {
    schema: {
      params: { type: "object", required: ["user_id"], properties: { user_id: { type: "string", minLength: 1, maxLength: 256 } } },
      body: {
        type: "object",
        required: ["type", "run_id", "thread_id"],
        additionalProperties: false,
        properties: { type: { type: "string" }, run_id: ID, thread_id: ID, data: { type: "object" } },
      },
    },
    onRequest: async (request, reply) => {
      const header = request.headers.authorization ?? "";
      const presented = createHash("sha256").update(header.startsWith("Bearer ") ? header.slice(7) : "").digest();
      if (!timingSafeEqual(presented, serviceSecret) || !request.headers["x-service-id"]) return reply.code(401).send({ error: "unauthorized" });
    },
  },
  async (request, reply) => {
    const userId = request.params.user_id;
    const seq = (seqs.get(userId) ?? 0) + 1;
    seqs.set(userId, seq);
    const { type, run_id, thread_id, data = {} } = request.body;
    io.to(`user:${userId}`).emit("event", { type, seq, run_id, thread_id, ts: new Date().toISOString(), data });
    return reply.code(202).send({ seq });
  },
);

await app.listen({ port: 0, host: "127.0.0.1" });
process.once("SIGTERM", () => {
  void io.close();
  pub?.disconnect();
  sub?.disconnect();
  setTimeout(() => process.exit(0), 500);
});
process.stdout.write(`READY ${JSON.stringify({ port: (app.server.address() as { port: number }).port, pid: process.pid })}\n`);
