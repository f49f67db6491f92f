/**
 * A private redis-server per test file: its own port, no persistence, a temp
 * dir. Test files run in parallel workers, so a port is picked by the OS and a
 * collision (another worker's server took it first) is retried; the server we
 * reach is checked to be ours by its process id.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.js";
import { sleep } from "./wait.js";

export interface RedisServerHandle {
  readonly port: number;
  readonly url: string;
  /** Graceful: SIGTERM, then waits for the exit. Removes the temp dir. */
  stop(): Promise<void>;
  /** SIGKILL, then waits for the exit: the data is gone (`--save ""`). */
  kill(): Promise<void>;
  /** Starts the server again on the same port (after kill or stop). */
  restart(): Promise<void>;
  /** SIGSTOP: the server keeps its sockets but answers nothing, like a hung host. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}

const REDIS_SERVER = process.env.REDIS_SERVER_BIN ?? "/usr/bin/redis-server";
const START_TIMEOUT_MS = 5_000;
const live = new Set<ChildProcess>();

// A worker that dies without running afterAll must not leave servers behind.
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export interface StartRedisOptions {
  args?: string[];
  /** Serve TLS only (PEM file paths); the url is then `rediss://`. */
  tls?: { certFile: string; keyFile: string; caFile: string };
  /**
   * Redis ACL users, each a `user` config line without the keyword, e.g.
   * `gw on >secret ~* +@all` (https://redis.io/docs/latest/operate/oss_and_stack/management/security/acl/).
   * The default user is switched off, so every connection must authenticate;
   * `admin` is the one the harness itself logs in as (it needs INFO).
   */
  acl?: { users: string[]; admin: { username: string; password: string } };
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServerHandle> {
  // Said plainly, rather than as a server that "did not answer" after the whole start timeout.
  if (!existsSync(REDIS_SERVER)) throw new Error(`redis-server is not installed: apt-get install redis-server (looked for ${REDIS_SERVER})`);
  const dir = await mkdtemp(join(tmpdir(), "gw-redis-"));
  const { tls } = options;
  const tlsArgs = tls
    ? ["--tls-cert-file", tls.certFile, "--tls-key-file", tls.keyFile, "--tls-ca-cert-file", tls.caFile, "--tls-auth-clients", "no"]
    : [];
  const aclArgs = options.acl ? ["--user", "default", "off", ...options.acl.users.flatMap((line) => ["--user", ...line.split(" ")])] : [];
  const extraArgs = [...(options.args ?? []), ...tlsArgs, ...aclArgs];
  const login = options.acl?.admin;
  let child: ChildProcess | undefined;
  let port = 0;

  const launch = async (fixedPort?: number): Promise<void> => {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let lastError: unknown;
    while (Date.now() < deadline) {
      const candidate = fixedPort ?? (await freePort());
      try {
        child = await spawnServer(candidate, dir, extraArgs, tls !== undefined, deadline, login);
        port = candidate;
        return;
      } catch (err) {
        lastError = err;
        // The same port is needed after a restart: wait for it to be released.
        if (fixedPort !== undefined) await sleep(50);
      }
    }
    throw new Error(`redis-server did not start: ${String(lastError)}`);
  };

  const waitExit = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    if (signal !== "SIGKILL") c.kill("SIGCONT");
    c.kill(signal);
    await exited;
  };

  try {
    await launch();
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    get port() {
      return port;
    },
    get url() {
      return `${tls ? "rediss" : "redis"}://127.0.0.1:${port}`;
    },
    async stop() {
      await waitExit("SIGTERM");
      await rm(dir, { recursive: true, force: true });
    },
    kill: () => waitExit("SIGKILL"),
    async restart() {
      await waitExit("SIGKILL");
      await launch(port);
    },
    pause() {
      child?.kill("SIGSTOP");
    },
    resume() {
      child?.kill("SIGCONT");
    },
  };
}

async function spawnServer(
  port: number,
  dir: string,
  extraArgs: string[],
  tls: boolean,
  deadline: number,
  login?: { username: string; password: string },
): Promise<ChildProcess> {
  const logfile = join(dir, `redis-${port}.log`);
  const listen = tls ? ["--port", "0", "--tls-port", String(port)] : ["--port", String(port)];
  const child = spawn(
    REDIS_SERVER,
    [...listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", logfile, ...extraArgs],
    { stdio: "ignore" },
  );
  live.add(child);
  child.once("exit", () => live.delete(child));
  // The test process must be able to exit even if a test forgets stop().
  child.unref();
  const spawnError = new Promise<never>((_, reject) => child.once("error", reject));
  spawnError.catch(() => {});
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = await readFile(logfile, "utf8").catch(() => "");
      throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode}): ${log.trim().split("\n").slice(-2).join(" | ")}`);
    }
    const passwordAt = extraArgs.indexOf("--requirepass");
    const password = passwordAt >= 0 ? extraArgs[passwordAt + 1] : undefined;
    const pid = await Promise.race([serverPid(port, tls, login ? [login.username, login.password] : password === undefined ? [] : [password]), spawnError]);
    if (pid === child.pid) return child;
    await sleep(20);
  }
  child.kill("SIGKILL");
  throw new Error(`redis-server on port ${port} did not answer within ${START_TIMEOUT_MS} ms`);
}

/** The process id of the redis-server answering on the port, or undefined. */
function serverPid(port: number, tls: boolean, auth: readonly string[]): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket: Socket = tls
      ? connectTls({ host: "127.0.0.1", port, rejectUnauthorized: false })
      : connect({ host: "127.0.0.1", port });
    let data = "";
    const done = (pid: number | undefined) => {
      socket.destroy();
      resolve(pid);
    };
    socket.setTimeout(500, () => done(undefined));
    // `on`, not `once`: a TLS socket can report a second error (an alert after a reset) once the first was handled.
    socket.on("error", () => done(undefined));
    const command = (...args: string[]) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;
    socket.once(tls ? "secureConnect" : "connect", () =>
      socket.write((auth.length === 0 ? "" : command("AUTH", ...auth)) + command("INFO", "server")),
    );
    socket.on("data", (chunk) => {
      data += chunk.toString("utf8");
      const match = /process_id:(\d+)/.exec(data);
      if (match) done(Number(match[1]));
      else if (/^-|\r\n-/.test(data)) done(undefined); // e.g. LOADING
    });
  });
}
