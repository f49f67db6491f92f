/**
 * A small Cloud Run for the drills: a set of real gateway processes behind a
 * round-robin router, and the two things a deploy does to them. A new
 * revision starts a fresh instance with the new environment, waits until its
 * readiness check passes, moves traffic to it, and only then sends the old
 * one SIGTERM (which drains it); one instance at a time, so the service never
 * has fewer instances serving than before.
 *
 * `pick()` is the load balancer for requests a drill makes itself;
 * `balancer()` is a TCP front end on one port for clients that take a single
 * URL (the SDK), each TCP connection going to the next serving instance.
 */
import { createServer, connect, type Server, type Socket } from "node:net";
import { spawnGatewayProc, type GatewayProc } from "../bench/lib/procs.js";
import { sleep } from "./lib.js";

export type Env = Record<string, string>;

export interface Restart {
  readonly name: string;
  /** From the new instance's spawn to the old one's exit. */
  readonly ms: number;
  readonly oldExit: number | string;
}

export class Fleet {
  readonly instances: GatewayProc[] = [];
  readonly restarts: Restart[] = [];
  private next = 0;
  private spawned = 0;

  private constructor(
    private env: Env,
    private readonly prefix: string,
  ) {}

  static async start(env: Env, size: number, prefix: string): Promise<Fleet> {
    const fleet = new Fleet(env, prefix);
    for (let i = 0; i < size; i++) fleet.instances.push(await fleet.spawnReady());
    return fleet;
  }

  /** The environment the next instance starts with. */
  get currentEnv(): Env {
    return { ...this.env };
  }

  /** The next serving instance, round robin (the load balancer). */
  pick(): GatewayProc {
    const instance = this.instances[this.next++ % this.instances.length];
    if (!instance) throw new Error("no instance serves");
    return instance;
  }

  /** A new revision: `patch` applied to the environment (undefined removes a variable), rolled out one instance at a time. */
  async deploy(patch: Record<string, string | undefined>): Promise<void> {
    const env = { ...this.env };
    for (const [k, v] of Object.entries(patch)) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    this.env = env;
    for (let i = 0; i < this.instances.length; i++) await this.replace(i);
  }

  /** Replaces instance `i` with a fresh one of the current environment (a restart, as a new revision or a crash-and-restart does). */
  async replace(i: number): Promise<GatewayProc> {
    const started = Date.now();
    const old = this.instances[i]!;
    const fresh = await this.spawnReady();
    this.instances[i] = fresh; // traffic moves to the new instance …
    await sleep(200); // … and requests already routed to the old one are on their way
    old.child.kill("SIGTERM");
    const exit = await old.exited;
    this.restarts.push({ name: old.name, ms: Date.now() - started, oldExit: exit.code ?? String(exit.signal) });
    return fresh;
  }

  /** A TCP front end on a free port: each accepted connection is piped to the next serving instance. */
  async balancer(): Promise<{ url: string; close: () => Promise<void> }> {
    const sockets = new Set<Socket>();
    const server: Server = createServer((client) => {
      const target = this.pick();
      const upstream = connect(target.port, "127.0.0.1");
      sockets.add(client).add(upstream);
      const end = () => {
        client.destroy();
        upstream.destroy();
        sockets.delete(client);
        sockets.delete(upstream);
      };
      client.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    const port = (server.address() as { port: number }).port;
    return {
      url: `http://127.0.0.1:${port}`,
      close: () => {
        for (const s of sockets) s.destroy();
        return new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  async stop(): Promise<void> {
    await Promise.all(this.instances.map((g) => g.stop()));
  }

  /** A gateway process that passes its readiness check (GET /ready 200), as Cloud Run's startup probe requires. */
  private async spawnReady(): Promise<GatewayProc> {
    const g = await spawnGatewayProc({ env: this.currentEnv, name: `${this.prefix}-${++this.spawned}`, readyTimeoutMs: 30_000 });
    const deadline = Date.now() + 20_000;
    while ((await fetch(`${g.url}/ready`).then((r) => r.status, () => 0)) !== 200) {
      if (Date.now() > deadline) throw new Error(`${g.name} never became ready:\n${g.log().slice(-2000)}`);
      await sleep(100);
    }
    return g;
  }
}
