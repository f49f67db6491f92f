import { ConfigError } from "./config.js";
import { secretsPermissionWaitMs } from "./secrets.js";
import { startServer } from "./server.js";
import { formatStartupFailure } from "./startupFailure.js";

/**
 * `npm start`: configuration → secrets → app → listen → drain on SIGTERM.
 *
 * A bad configuration exits 1 within 5 s with one message naming every
 * problem. On SIGTERM (Cloud Run gives ~10 s before SIGKILL) `app.close()`
 * drains: /readyz turns 503, every socket gets 4012 SERVICE_RESTART, the
 * store closes; if that takes longer than SHUTDOWN_GRACE_MS, exit anyway.
 */
// Plus the time a PERMISSION_DENIED secret read may be retried (./secrets.ts), 0 unless configured.
const STARTUP_LIMIT_MS = 5000 + secretsPermissionWaitMs(process.env);

async function main(): Promise<void> {
  const startup = setTimeout(() => {
    process.stderr.write(`chat-gateway: startup did not finish within ${STARTUP_LIMIT_MS} ms (secrets or store unreachable?)\n`);
    process.exit(1);
  }, STARTUP_LIMIT_MS);
  startup.unref();

  let running: Awaited<ReturnType<typeof startServer>>;
  try {
    running = await startServer(process.env);
  } catch (err) {
    const text = err instanceof ConfigError ? err.message : `Startup failed: ${(err as Error).message}`;
    // One JSON line for Cloud Logging; plain lines for a person at a terminal.
    process.stderr.write(formatStartupFailure(text, { tty: process.stderr.isTTY === true, production: process.env.NODE_ENV === "production" }));
    process.exit(1);
  }
  clearTimeout(startup);
  const { app, config, logger } = running;

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ event: "draining", signal, connections: app.hub.size }, "draining");
    const force = setTimeout(() => {
      logger.error({ event: "shutdown_forced" }, `shutdown took longer than ${config.shutdownGraceMs} ms`);
      logger.flush();
      process.exit(1);
    }, config.shutdownGraceMs);
    force.unref();
    app
      .close()
      .then(() => {
        logger.info({ event: "stopped" }, "drained and stopped");
        logger.flush(() => process.exit(0));
      })
      .catch((err: unknown) => {
        logger.error({ err, event: "shutdown_failed" }, "shutdown failed");
        logger.flush(() => process.exit(1));
      });
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

void main();
