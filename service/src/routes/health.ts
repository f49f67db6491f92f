import type { FastifyInstance, FastifyReply } from "fastify";

/**
 * Liveness and readiness (docs/protocol.md §6).
 *
 * /health and /healthz: the process serves (Cloud Run's liveness probe; its
 * front end answers some paths ending in `z` itself, so the public checks use
 * /health and /ready).
 *
 * /ready and /readyz: secrets are loaded (the app would not exist otherwise),
 * and the store and the bus answer; 503 while draining, so the load balancer
 * stops sending new connections before the sockets are closed. The public
 * body is `{"status"}` only: which dependency is failing is nobody's business
 * on the internet. The per-check detail is served on the metrics port
 * (GET /readyz there) and logged once each time readiness changes.
 *
 * The JWKS's state is part of the detail but not of readiness: every instance
 * shares the same endpoint, and an outage of it is already answered per token
 * (503 AUTH_UNAVAILABLE) while the last good key set keeps most tokens
 * working; taking every instance out of the load balancer would turn an auth
 * outage into a full one.
 */
export interface Readiness {
  readonly status: "ok" | "degraded" | "draining";
  readonly checks: { readonly secrets: "ok"; readonly store: string; readonly bus: string; readonly jwks: string };
}

export async function healthRoutes(app: FastifyInstance): Promise<void> {
  let lastStatus: Readiness["status"] | undefined;

  async function readiness(): Promise<Readiness> {
    const jwks = app.verifier.keySetState();
    if (app.hub.draining) return noteChange({ status: "draining", checks: { secrets: "ok", store: "skipped", bus: "skipped", jwks } });
    const { store, bus } = await app.store.check();
    const checks = { secrets: "ok", store: store ? "ok" : "unreachable", bus: bus ? "ok" : "unreachable", jwks } as const;
    return noteChange({ status: store && bus ? "ok" : "degraded", checks });
  }

  /** One log line per change of readiness, with the checks that explain it. */
  function noteChange(result: Readiness): Readiness {
    if (result.status !== lastStatus) {
      const line = { event: "readiness_changed", status: result.status, previous: lastStatus ?? null, checks: result.checks };
      if (result.status === "ok") app.log.info(line, "ready");
      else app.log.warn(line, `not ready: ${result.status}`);
      lastStatus = result.status;
    }
    return result;
  }

  const httpStatus = (r: Readiness) => (r.status === "ok" ? 200 : 503);
  const live = async () => ({ status: "ok" });
  app.get("/healthz", live);
  app.get("/health", live);

  const ready = async (_request: unknown, reply: FastifyReply) => {
    const result = await readiness();
    return reply.code(httpStatus(result)).send({ status: result.status });
  };
  app.get("/readyz", ready);
  app.get("/ready", ready);

  // The detail, on the metrics listener only (never on the public port).
  app.metricsRoute("/readyz", async () => {
    const result = await readiness();
    return { status: httpStatus(result), body: result };
  });
}
