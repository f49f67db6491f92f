/**
 * A private Redis Cluster per test file: `masters` primaries (3 by default),
 * each with `replicas` replicas, all `redis-server` processes on loopback with
 * OS-picked ports (the cluster bus port is picked too, with `cluster-port`,
 * so that port + 10000 need not be free), no persistence, a temp dir each,
 * formed with `redis-cli --cluster create`. Ready once every node reports
 * `cluster_state:ok`, agrees on who serves every slot, and every replica is
 * in sync.
 *
 * Nodes can be stopped, killed (SIGKILL: the node's data is gone, its
 * nodes.conf stays) and restarted on the same ports, where they rejoin the
 * cluster: as the primary they were, or as a replica of the one that took
 * over meanwhile.
 */
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { startRedis, type RedisServerHandle, type StartRedisOptions } from "./redis-server.js";
import { freePort } from "./ports.js";

const REDIS_CLI = process.env.REDIS_CLI_BIN ?? "/usr/bin/redis-cli";
const run = promisify(execFile);

export interface ClusterNodeHandle {
  readonly port: number;
  /** `127.0.0.1:<port>` */
  readonly address: string;
  /** False after kill() or stop(), until restart(). */
  readonly running: boolean;
  kill(): Promise<void>;
  restart(): Promise<void>;
  pause(): void;
  resume(): void;
  /** One command on a fresh connection to this node (no redirection). */
  call(...args: Array<string | number>): Promise<unknown>;
}

export interface ClusterNodeInfo {
  readonly id: string;
  readonly address: string;
  readonly port: number;
  readonly flags: readonly string[];
  readonly master: boolean;
  /** The id of its primary, for a replica. */
  readonly masterId: string | undefined;
  readonly slots: ReadonlyArray<readonly [number, number]>;
}

export interface RedisClusterHandle {
  readonly nodes: readonly ClusterNodeHandle[];
  /** For REDIS_CLUSTER_NODES: every node's host:port, comma-separated. */
  readonly startupNodes: string;
  readonly password: string | undefined;
  /** CLUSTER NODES as one running node sees it. */
  topology(): Promise<ClusterNodeInfo[]>;
  /** The node serving the slot of `key` as primary now. */
  primaryOf(key: string): Promise<ClusterNodeHandle>;
  /** The replicas of a primary. */
  replicasOf(primary: ClusterNodeHandle): Promise<ClusterNodeHandle[]>;
  /** Waits until every running node says cluster_state:ok, they agree on every slot's primary, and replicas are in sync. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  /** Primaries; default 3. */
  masters?: number;
  /** Replicas per primary; default 0. */
  replicas?: number;
  /** cluster-node-timeout: how long a silent primary takes to be failed over. Default 1000. */
  nodeTimeoutMs?: number;
  /** requirepass (and masterauth) on every node. */
  password?: string;
  /** Serve TLS only, the cluster bus and replication included (PEM file paths; see makeCertificates). */
  tls?: { certFile: string; keyFile: string; caFile: string };
  /**
   * Redis ACL users on every node, the default user off (see StartRedisOptions.acl).
   * `admin` forms the cluster, replicates (masteruser) and answers `call`.
   */
  acl?: { users: string[]; admin: { username: string; password: string } };
}

/** Starts the cluster; throws (after stopping what it started) if it does not form within 20 s. */
export async function startRedisCluster(options: StartClusterOptions = {}): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 0;
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 1000;
  const password = options.password;
  const tls = options.tls;
  const acl = options.acl;
  const count = masters * (replicas + 1);

  const servers = await Promise.all(
    Array.from({ length: count }, () =>
      startNode({
        args: [
          "--cluster-enabled", "yes",
          "--cluster-config-file", "nodes.conf",
          "--cluster-node-timeout", String(nodeTimeoutMs),
          // A replica whose primary died a moment ago still takes over (the default allows 10 node timeouts).
          "--cluster-replica-validity-factor", "0",
          // A replica syncs at once instead of waiting 5 s for others to join the transfer.
          "--repl-diskless-sync-delay", "0",
          ...(password === undefined ? [] : ["--requirepass", password, "--masterauth", password]),
          ...(tls === undefined ? [] : ["--tls-cluster", "yes", "--tls-replication", "yes"]),
          ...(acl === undefined ? [] : ["--masteruser", acl.admin.username, "--masterauth", acl.admin.password]),
        ],
        tls,
        ...(acl === undefined ? {} : { acl }),
      }),
    ),
  );
  const ca = tls === undefined ? undefined : await readFile(tls.caFile, "utf8");
  const handles = servers.map((server) => nodeHandle(server, acl?.admin ?? (password === undefined ? undefined : { password }), ca));
  const cluster: RedisClusterHandle = {
    nodes: handles,
    startupNodes: handles.map((h) => h.address).join(","),
    password,
    async topology() {
      for (const node of handles) {
        if (!node.running) continue;
        try {
          return parseClusterNodes(String(await node.call("CLUSTER", "NODES")));
        } catch {
          // try the next node
        }
      }
      throw new Error("no cluster node answers");
    },
    async primaryOf(key) {
      const slot = Number(await firstRunning(handles).call("CLUSTER", "KEYSLOT", key));
      const info = (await cluster.topology()).find((n) => n.master && !n.flags.includes("fail") && n.slots.some(([a, b]) => slot >= a && slot <= b));
      const node = handles.find((h) => h.port === info?.port);
      if (!node) throw new Error(`no primary serves slot ${slot}`);
      return node;
    },
    async replicasOf(primary) {
      const infos = await cluster.topology();
      const id = infos.find((n) => n.port === primary.port)?.id;
      const ports = infos.filter((n) => n.masterId === id && id !== undefined).map((n) => n.port);
      return handles.filter((h) => ports.includes(h.port));
    },
    waitHealthy: (timeoutMs = 15_000) => keepAlive(waitHealthy(handles, masters, timeoutMs)),
    async stop() {
      await keepAlive(Promise.all(servers.map((s) => s.stop())));
    },
  };

  try {
    await run(REDIS_CLI, [
      ...(password === undefined ? [] : ["-a", password, "--no-auth-warning"]),
      ...(acl === undefined ? [] : ["--user", acl.admin.username, "-a", acl.admin.password, "--no-auth-warning"]),
      ...(tls === undefined ? [] : ["--tls", "--cacert", tls.caFile]),
      "--cluster", "create",
      ...handles.map((h) => h.address),
      "--cluster-replicas", String(replicas),
      "--cluster-yes",
    ], { timeout: 15_000 });
    await cluster.waitHealthy(20_000);
    return cluster;
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

/** A node on an OS-picked port, with its cluster bus on another picked port; retried if that one was taken meanwhile. */
async function startNode(options: StartRedisOptions): Promise<RedisServerHandle> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startRedis({ ...options, args: [...(options.args ?? []), "--cluster-port", String(await freePort())] });
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

function nodeHandle(server: RedisServerHandle, login: { username?: string; password: string } | undefined, ca: string | undefined): ClusterNodeHandle {
  let running = true;
  return {
    get port() {
      return server.port;
    },
    get address() {
      return `127.0.0.1:${server.port}`;
    },
    get running() {
      return running;
    },
    async kill() {
      running = false;
      await keepAlive(server.kill());
    },
    async restart() {
      await keepAlive(server.restart());
      running = true;
    },
    pause: () => server.pause(),
    resume: () => server.resume(),
    async call(...args) {
      const conn = new Redis({
        port: server.port,
        host: "127.0.0.1",
        ...login,
        tls: ca === undefined ? undefined : { ca },
        lazyConnect: true,
        retryStrategy: null,
        maxRetriesPerRequest: 0,
        connectTimeout: 1000,
        commandTimeout: 2000,
      });
      conn.on("error", () => undefined);
      try {
        await conn.connect();
        return await conn.call(String(args[0]), ...args.slice(1).map(String));
      } finally {
        conn.disconnect();
      }
    },
  };
}

/**
 * The servers' child processes are unref'd (a test must not hang on them), so
 * a script that only waits for one (a drill run alone) would exit mid-wait.
 */
async function keepAlive<T>(promise: Promise<T>): Promise<T> {
  const timer = setInterval(() => undefined, 60_000);
  try {
    return await promise;
  } finally {
    clearInterval(timer);
  }
}

function firstRunning(nodes: readonly ClusterNodeHandle[]): ClusterNodeHandle {
  const node = nodes.find((n) => n.running);
  if (!node) throw new Error("no cluster node is running");
  return node;
}

async function waitHealthy(nodes: readonly ClusterNodeHandle[], masters: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      last = await healthProblem(nodes, masters);
      if (last === "") return;
    } catch (err) {
      last = String(err);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`the Redis cluster did not become healthy within ${timeoutMs} ms: ${last}`);
}

/** "" when healthy, else what is not yet. */
async function healthProblem(nodes: readonly ClusterNodeHandle[], masters: number): Promise<string> {
  const running = nodes.filter((n) => n.running);
  const views: string[] = [];
  for (const node of running) {
    const info = String(await node.call("CLUSTER", "INFO"));
    if (!info.includes("cluster_state:ok")) return `${node.address}: cluster_state not ok`;
    const topology = parseClusterNodes(String(await node.call("CLUSTER", "NODES")));
    const serving = topology.filter((n) => n.master && n.slots.length > 0);
    if (serving.length !== masters) return `${node.address} sees ${serving.length} primaries serving slots`;
    if (serving.some((n) => n.flags.includes("fail") || n.flags.includes("fail?"))) return `${node.address} sees a failed primary`;
    if (serving.some((n) => !running.some((r) => r.port === n.port))) return `${node.address} names a stopped node as primary`;
    // Every running node must be known and connected to this one.
    for (const other of running) {
      const seen = topology.find((n) => n.port === other.port);
      if (!seen || seen.flags.some((f) => f === "fail" || f === "fail?" || f === "handshake" || f === "noaddr")) return `${node.address} does not yet see ${other.address}`;
    }
    views.push(serving.map((n) => `${n.port}=${n.slots.map(([a, b]) => `${a}-${b}`).join(",")}`).sort().join(" "));
    const replication = String(await node.call("INFO", "replication"));
    if (replication.includes("role:slave") && !replication.includes("master_link_status:up")) return `${node.address}: replica not in sync`;
  }
  if (new Set(views).size > 1) return `nodes disagree on the slot map: ${[...new Set(views)].join(" | ")}`;
  return "";
}

export function parseClusterNodes(text: string): ClusterNodeInfo[] {
  return text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [id = "", addr = "", flags = "", masterId = "-", , , , , ...slots] = line.trim().split(" ");
      const address = addr.split("@")[0] ?? "";
      const flagList = flags.split(",");
      return {
        id,
        address,
        port: Number(address.slice(address.lastIndexOf(":") + 1)),
        flags: flagList,
        master: flagList.includes("master"),
        masterId: masterId === "-" ? undefined : masterId,
        slots: slots
          .filter((s) => !s.startsWith("["))
          .map((s) => {
            const [a, b] = s.split("-");
            return [Number(a), Number(b ?? a)] as const;
          }),
      };
    });
}


/** A throwaway CA, and a certificate for 127.0.0.1 signed by it that every node serves (and presents to its peers). */
export async function makeCertificates(dir: string): Promise<{ certFile: string; keyFile: string; caFile: string }> {
  const path = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run("openssl", ["req", "-x509", ...ec, "-keyout", path("ca.key"), "-out", path("ca.crt"), "-days", "1", "-subj", "/CN=gw-test-ca"]);
  await run("openssl", ["req", ...ec, "-keyout", path("server.key"), "-out", path("server.csr"), "-subj", "/CN=127.0.0.1"]);
  await writeFile(path("san.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
  await run("openssl", [
    "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.crt"), "-CAkey", path("ca.key"), "-CAcreateserial",
    "-out", path("server.crt"), "-days", "1", "-extfile", path("san.ext"),
  ]);
  return { certFile: path("server.crt"), keyFile: path("server.key"), caFile: path("ca.crt") };
}
