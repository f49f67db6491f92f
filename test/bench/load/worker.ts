/**
 * A load-generator process. The parent (test/bench/lib/loadgen.ts) sends
 * `{id, cmd, payload}` over IPC and gets `{id, ok, result|error}` back. The
 * worker keeps state between calls (tokens, tickets, open sockets), so a
 * bench can open connections in one call and close them in another.
 *
 * It ends by itself when the parent goes away or after MAX_LIFETIME_MS.
 */
import { commands as connectCommands } from "./connect.js";
import { commands as deliveryCommands } from "./delivery.js";
import { commands as httpCommands } from "./http-load.js";
import { commands as idleCommands } from "./idle.js";
import { commands as stormCommands } from "./storm.js";
import { state, type Command } from "./state.js";

const MAX_LIFETIME_MS = 30 * 60_000;
setTimeout(() => process.exit(3), MAX_LIFETIME_MS).unref();
process.on("disconnect", () => process.exit(0));

const commands: Record<string, Command> = {
  ...httpCommands,
  ...connectCommands,
  ...idleCommands,
  ...deliveryCommands,
  ...stormCommands,
  async ping() {
    return { pid: process.pid };
  },
  async cpu() {
    const u = process.cpuUsage();
    return { cpuMs: (u.user + u.system) / 1000, rss: process.memoryUsage().rss, open: state.openSockets };
  },
};

process.on("message", (message: { id: number; cmd: string; payload: unknown }) => {
  const handler = commands[message.cmd];
  if (!handler) {
    process.send!({ id: message.id, ok: false, error: `unknown command ${message.cmd}` });
    return;
  }
  handler(message.payload).then(
    (result) => process.send!({ id: message.id, ok: true, result }),
    (err: unknown) => process.send!({ id: message.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
