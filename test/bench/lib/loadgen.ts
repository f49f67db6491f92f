/**
 * The parent's side of a load-generator process (test/bench/load/worker.ts):
 * a small RPC over the IPC channel. The worker is stateful (it keeps its
 * connections between calls), so a bench can say "open 10,000 sockets", then
 * measure the server, then "close them", each as one call.
 */
import { cpuMeter, spawnNode, type NodeProc } from "./procs.js";

export interface LoadGen {
  readonly proc: NodeProc;
  call<T = unknown>(cmd: string, payload?: unknown, timeoutMs?: number): Promise<T>;
  /** CPU use of the load generator over the window since the call. */
  meter(): () => { cpuMs: number; wallMs: number; percent: number };
  close(): Promise<void>;
}

interface Reply {
  readonly id: number;
  readonly ok: boolean;
  readonly result?: unknown;
  readonly error?: string;
}

export async function spawnLoadGen(name: string, cpus: string | undefined, nodeArgs: readonly string[] = []): Promise<LoadGen> {
  const proc = await spawnNode("test/bench/load/worker.ts", { name, cpus, env: { NODE_ENV: "production" }, ipc: true, nodeArgs });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  let next = 1;
  proc.child.on("message", (message: Reply) => {
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    clearTimeout(waiter.timer);
    if (message.ok) waiter.resolve(message.result);
    else waiter.reject(new Error(`${name}: ${message.error}`));
  });
  void proc.exited.then((exit) => {
    for (const [, waiter] of pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error(`${name} exited (${exit.code ?? exit.signal}):\n${proc.log().slice(-2000)}`));
    }
    pending.clear();
  });
  return {
    proc,
    call<T>(cmd: string, payload: unknown = {}, timeoutMs = 300_000): Promise<T> {
      const id = next++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${name}: ${cmd} did not finish within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        proc.child.send({ id, cmd, payload });
      });
    },
    meter: () => cpuMeter(proc.pid),
    async close() {
      if (!proc.alive()) return;
      proc.child.disconnect();
      await proc.stop(5000);
    },
  };
}
