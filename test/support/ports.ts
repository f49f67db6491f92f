import { createServer } from "node:net";

/**
 * A free loopback port: the OS picks one for a moment. (`redis-server --port 0`
 * does not work, so tests pick ports this way; a rare collision with another
 * worker shows up as EADDRINUSE and the callers retry.)
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
