import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import fp from "fastify-plugin";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/**
 * Prometheus metrics (docs/protocol.md §6) in a registry of this app's own
 * (tests run several apps in one process), served on METRICS_PORT by a
 * listener of its own: never on the public port. Labels are codes and
 * outcomes only; no user id, ticket or token is ever a label.
 */
function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "gateway_process_" });
  const reg = [registry];
  return {
    registry,
    ticketsIssued: new Counter({ name: "gateway_tickets_issued_total", help: "Tickets issued.", registers: reg }),
    ticketRequests: new Counter({
      name: "gateway_ticket_requests_total",
      help: "Ticket endpoint answers, by status code and error code.",
      labelNames: ["status", "code"],
      registers: reg,
    }),
    wsAuth: new Counter({
      name: "gateway_ws_auth_total",
      help: "WebSocket authentication outcomes.",
      labelNames: ["outcome", "reason"],
      registers: reg,
    }),
    wsConnections: new Gauge({ name: "gateway_ws_connections", help: "Open authenticated WebSocket connections on this instance.", registers: reg }),
    wsCloses: new Counter({
      name: "gateway_ws_closes_total",
      help: "WebSocket closes by who closed and close code (a client's own codes in a few buckets, realtime/closeCodes.ts).",
      labelNames: ["code", "closed_by"],
      registers: reg,
    }),
    heartbeatTimeouts: new Counter({
      name: "gateway_ws_heartbeat_timeouts_total",
      help: "Peers terminated after missing two pongs.",
      registers: reg,
    }),
    ticketRedeemSeconds: new Histogram({
      name: "gateway_ticket_redeem_seconds",
      help: "Store round trip of a ticket redemption.",
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: reg,
    }),
    eventsPublished: new Counter({ name: "gateway_events_published_total", help: "Agent events published.", registers: reg }),
    eventsDelivered: new Counter({ name: "gateway_events_delivered_total", help: "Agent event frames sent to sockets (live and replayed).", registers: reg }),
    resumes: new Counter({ name: "gateway_resume_total", help: "Resume requests by outcome.", labelNames: ["outcome"], registers: reg }),
    busLagSeconds: new Histogram({
      name: "gateway_bus_lag_seconds",
      help: "Time from publication to arrival on this instance's bus subscriber.",
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: reg,
    }),
    agentHandoffs: new Counter({
      name: "gateway_agent_handoffs_total",
      help: "chat_message hand-offs to the agent backend, by outcome (accepted, duplicate, rejected, unavailable, pending, rate_limited, store_unavailable, chat_unavailable).",
      labelNames: ["outcome"],
      registers: reg,
    }),
    internalRequests: new Counter({
      name: "gateway_internal_requests_total",
      help: "Internal API calls by caller (X-Service-Id, a bounded set: see routes/internal.ts) and status code.",
      labelNames: ["service_id", "status"],
      registers: reg,
    }),
    storeUnavailable: new Counter({
      name: "gateway_store_unavailable_total",
      help: "Operations that failed because the store could not be reached.",
      labelNames: ["operation"],
      registers: reg,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

declare module "fastify" {
  interface FastifyInstance {
    metrics: Metrics;
    /** The metrics listener's port (when METRICS_PORT is 0, the one chosen). */
    metricsPort: () => number | undefined;
    /** Serves `GET path` with a JSON answer on the metrics listener (operator detail that must not reach the public port). */
    metricsRoute: (path: string, handler: () => Promise<{ status: number; body: unknown }>) => void;
  }
}

/** Decorates `metrics` and serves them on `port` (null: no listener, e.g. several apps in one test). */
export const metricsPlugin = fp<{ port: number | null; host: string }>(
  async (app, opts) => {
    const metrics = createMetrics();
    app.decorate("metrics", metrics);
    let server: Server | undefined;
    const routes = new Map<string, () => Promise<{ status: number; body: unknown }>>();
    app.decorate("metricsRoute", (path: string, handler: () => Promise<{ status: number; body: unknown }>) => void routes.set(path, handler));
    if (opts.port !== null) {
      server = createServer((req, res) => {
        if (req.method === "GET" && req.url === "/metrics") {
          metrics.registry
            .metrics()
            .then((body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body))
            .catch(() => res.writeHead(500).end());
          return;
        }
        const route = req.method === "GET" ? routes.get(req.url ?? "") : undefined;
        if (route) {
          route()
            .then(({ status, body }) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body)))
            .catch(() => res.writeHead(500).end());
          return;
        }
        res.writeHead(404).end();
      });
      const listening = server;
      await new Promise<void>((resolve, reject) => {
        listening.once("error", reject);
        listening.listen(opts.port ?? 0, opts.host, () => resolve());
      });
    }
    app.decorate("metricsPort", () => (server?.address() as AddressInfo | null)?.port);
    app.addHook("onClose", async () => {
      if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
      metrics.registry.clear();
    });
  },
  { name: "metrics" },
);
