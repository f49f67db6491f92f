import type { FastifyInstance } from "fastify";

/**
 * /healthz: the process serves (Cloud Run's liveness probe).
 * /readyz: secrets are loaded (the app would not exist otherwise), and the
 * store and the bus answer; 503 while draining, so the load balancer stops
 * sending new connections before the sockets are closed.
 */
export async function healthRoutes(app: FastifyInstance): Promise<void> {
  app.get("/healthz", async () => ({ status: "ok" }));

  app.get("/readyz", async (_request, reply) => {
    if (app.hub.draining) return reply.code(503).send({ status: "draining", checks: { secrets: "ok", store: "skipped", bus: "skipped" } });
    const { store, bus } = await app.store.check();
    const checks = { secrets: "ok", store: store ? "ok" : "unreachable", bus: bus ? "ok" : "unreachable" };
    const ready = store && bus;
    return reply.code(ready ? 200 : 503).send({ status: ready ? "ok" : "degraded", checks });
  });
}
