/**
 * Issue 8's rule, checked on what the store really sends to a Redis Cluster:
 * every key (and shard channel) that one command or one script touches lies
 * in one hash slot, so nothing is cross-slot, whatever the ids hold.
 *
 * MONITOR on every primary records each command and, within a script, each
 * command the script runs. Every method of the store is called with ids full
 * of awkward characters. Then: the keys of each command and script
 * (COMMAND GETKEYS, the declared KEYS, and the channel of SPUBLISH, which a
 * cluster treats as a key of its slot) share one CLUSTER KEYSLOT; no classic
 * PUBLISH or SUBSCRIBE is used (it would be broadcast to every node); every
 * key and channel matches a pattern of keyPatterns(), and every pattern was
 * seen, so the list is complete.
 */
import { connect, type Socket } from "node:net";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRedisStore,
  hashSlot,
  keyPatterns,
  redisKeys,
  type AgentEventInput,
  type Store,
} from "../../service/src/plugins/store/index.js";
import { startRedisCluster, type RedisClusterHandle } from "../support/redis-cluster.js";
import { waitFor } from "../support/wait.js";
import { userSlot } from "../../service/src/plugins/store/keys.js";

const IDS = ["plain", "a}b", "{x}", "a:b", "%7D", "ü \u{1F600}", "\uD800", "a b"];
const LIMITS = { maxEvents: 10, ttlMs: 60_000 };

interface Logged {
  readonly node: number;
  readonly args: string[];
  /** Commands a script ran, for a script call. */
  readonly inner: string[][];
}

let cluster: RedisClusterHandle;
let store: Store;
/** Asks the cluster (COMMAND GETKEYS, CLUSTER KEYSLOT); its own commands are not among the logged ones. */
let admin: Redis;
let logged: Logged[] = [];
const monitors: Socket[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster();
  for (const [index, node] of cluster.nodes.entries()) monitors.push(await monitor(node, index, logged));
  store = createRedisStore({ cluster: { nodes: cluster.nodes.map((n) => ({ host: "127.0.0.1", port: n.port })) } });
  // Everything the store can do, with every awkward id.
  for (const id of IDS) {
    const ticket = { hash: `issued-${id}`, slot: userSlot(id) };
    await store.issueTicket(ticket, { sub: id, sessionExpiresAt: 1, origin: null, issuedAt: 1, expiresAt: 2 }, 1000, { perUser: 5, windowMs: 1000, tokenIssuedAt: 1 });
    // Twice: the second finds the ticket taken (the "used" branch of gwAdmit).
    await store.admit({ ticket, origin: null, nowMs: 1, connectionId: `a-${id}`, maxConnections: 5, connectionTtlMs: 1000 });
    await store.admit({ ticket, origin: null, nowMs: 1, connectionId: `b-${id}`, maxConnections: 5, connectionTtlMs: 1000 });
    await store.userState(id);
    await store.addHits(id, 2, 1000);
    await store.hit(id, 1000);
    await store.revokeUser(id, 1, 1000);
    await store.revokedAt(id);
    await store.revokeTokensBefore(id, 1, 1000);
    await store.tokensNotBefore(id);
    await store.addConnection(id, `c-${id}`, 5, 1000);
    await store.refreshConnections([{ userId: id, connectionId: `c-${id}` }, { userId: "plain", connectionId: "c" }], 1000);
    await store.removeConnection(id, `c-${id}`);
    await store.claimMessage(id, `m${id}`, { ttlMs: 1000, staleMs: 1000 });
    await store.markMessageStarted(id, `m${id}`, { ttlMs: 1000, maxPerUser: 10 });
    await store.claimMessage(id, `n${id}`, { ttlMs: 1000, staleMs: 1000 });
    await store.releaseMessage(id, `n${id}`);
    await store.subscribeUser(id);
    await store.head(id);
    await store.publishEvent(id, event(id), LIMITS);
    await store.publishEvents(id, [event(id), event(id)], LIMITS);
    await store.readHistory(id, 0, LIMITS);
    await store.publishUserControl(id, "x");
    await store.unsubscribeUser(id);
    await store.subscribeInstance(id);
    await store.publishInstance(id, "x");
  }
  await store.check();
  // MONITOR lags the commands a little: wait until the last one is in.
  await waitFor(() => logged.some((l) => l.args[0]?.toLowerCase() === "spublish" && l.args[1] === redisKeys.instanceChannel(IDS.at(-1)!)));
  for (const socket of monitors) socket.destroy();
  logged = [...logged];
  admin = new Redis({ port: cluster.nodes[0]!.port, host: "127.0.0.1" });
});

afterAll(async () => {
  for (const socket of monitors) socket.destroy();
  admin?.disconnect();
  await store?.close();
  await cluster?.stop();
});

describe("keys and channels on a Redis Cluster", () => {
  it("puts every key and channel of one command or script in one slot", async () => {
    const slotOf = new Map<string, number>();
    const slot = async (key: string) => {
      let s = slotOf.get(key);
      if (s === undefined) slotOf.set(key, (s = Number(await admin.cluster("KEYSLOT", key))));
      return s;
    };
    let scripts = 0;
    let checked = 0;
    for (const entry of logged) {
      const keys = await keysOf(entry);
      if (keys.length === 0) continue;
      const slots = new Set(await Promise.all(keys.map(slot)));
      expect(slots.size, `${entry.args.join(" ")} → ${keys.join(", ")}`).toBe(1);
      checked++;
      if (entry.inner.length > 0) scripts++;
    }
    expect(scripts).toBeGreaterThan(IDS.length * 6);
    expect(checked).toBeGreaterThan(IDS.length * 15);
    // The slot the bus computes for a channel is the cluster's own.
    for (const key of slotOf.keys()) expect(hashSlot(key), key).toBe(slotOf.get(key));
  });

  it("uses sharded pub/sub only: SPUBLISH inside the publish scripts, on the channel of the script's slot", async () => {
    const all = logged.flatMap((l) => [l.args, ...l.inner]).map((args) => args[0]?.toLowerCase());
    for (const classic of ["publish", "subscribe", "psubscribe", "unsubscribe"]) expect(all).not.toContain(classic);
    const publishes = logged.filter((l) => l.inner.some((c) => c[0]?.toLowerCase() === "spublish"));
    expect(publishes).toHaveLength(IDS.length * 2); // publishEvent and publishEvents (the batch script)
    for (const script of publishes) {
      const spublish = script.inner.find((c) => c[0]?.toLowerCase() === "spublish")!;
      const declared = script.args.slice(3, 3 + Number(script.args[2]));
      expect(declared).toContain(spublish[1]);
      expect(new Set(declared.map(hashSlot)).size).toBe(1);
    }
    expect(all.filter((name) => name === "ssubscribe").length).toBeGreaterThanOrEqual(IDS.length * 2);
  });

  it("writes and subscribes only keys of keyPatterns(), and every pattern occurs", async () => {
    const patterns = keyPatterns();
    const matchers = Object.entries(patterns).map(([name, pattern]) => [name, patternRegExp(pattern)] as const);
    const seen = new Set<string>();
    for (const entry of logged) {
      for (const key of await keysOf(entry)) {
        const match = matchers.filter(([, re]) => re.test(key)).map(([name]) => name);
        expect(match.length, `${key} matches ${match.join(", ") || "no pattern"}`).toBe(1);
        seen.add(match[0]!);
      }
    }
    expect([...seen].sort()).toEqual(Object.keys(patterns).sort());
  });
});

// ── helpers ──

/** The keys one logged command touched, with those of the commands its script ran; channels of sharded pub/sub count as keys. */
async function keysOf(entry: Logged): Promise<string[]> {
  const keys: string[] = [];
  for (const args of [entry.args, ...entry.inner]) {
    const name = args[0]?.toLowerCase() ?? "";
    if (["ssubscribe", "sunsubscribe"].includes(name)) keys.push(...args.slice(1));
    else if (name === "spublish" || name === "publish") keys.push(args[1]!);
    else if (["evalsha", "eval"].includes(name)) keys.push(...args.slice(3, 3 + Number(args[2])));
    else if (!["ping", "info", "time", "cluster", "client", "command", "quit", "monitor", "readonly", "auth", "hello", "script", "select"].includes(name)) {
      keys.push(...((await admin.call("COMMAND", "GETKEYS", ...args).catch(() => [])) as string[]));
    }
  }
  return keys;
}

/** A pattern of keyPatterns() as a regular expression: `<id>` and `<messageId>` stand for encodeId's output. */
function patternRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/<id>|<messageId>/g, "[A-Za-z0-9._~%-]+");
  return new RegExp(`^${escaped}$`);
}

/** MONITOR on a raw socket: ioredis splits arguments naively, and JSON bodies are full of quotes. */
function monitor(node: { port: number }, index: number, into: Logged[]): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port: node.port });
    let buffer = "";
    socket.once("error", reject);
    socket.on("data", (chunk) => {
      buffer += chunk.toString("latin1");
      let end: number;
      while ((end = buffer.indexOf("\r\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line === "+OK") {
          resolve(socket);
          continue;
        }
        if (!line.startsWith("+")) continue;
        const parsed = parseMonitorLine(line.slice(1));
        if (parsed === undefined) continue;
        const last = into.findLast((l) => l.node === index);
        if (parsed.source === "lua" && last) last.inner.push(parsed.args);
        else if (parsed.source !== "lua") into.push({ node: index, args: parsed.args, inner: [] });
      }
    });
    socket.write("MONITOR\r\n");
  });
}

/** `1700000000.123456 [0 127.0.0.1:5555] "set" "k" "v"`, with C escapes inside the quotes. */
function parseMonitorLine(line: string): { source: string; args: string[] } | undefined {
  const open = line.indexOf("[");
  const close = line.indexOf("]", open);
  if (open < 0 || close < 0) return undefined;
  const source = line.slice(open + 1, close).split(" ")[1] ?? "";
  const args: string[] = [];
  let i = close + 1;
  while (i < line.length) {
    if (line[i] !== '"') {
      i++;
      continue;
    }
    let bytes = "";
    i++;
    while (i < line.length && line[i] !== '"') {
      if (line[i] === "\\") {
        const next = line[i + 1];
        if (next === "x") {
          bytes += String.fromCharCode(parseInt(line.slice(i + 2, i + 4), 16));
          i += 4;
          continue;
        }
        bytes += { n: "\n", r: "\r", t: "\t", a: "\x07", b: "\b" }[next as "n"] ?? next;
        i += 2;
        continue;
      }
      bytes += line[i];
      i++;
    }
    args.push(Buffer.from(bytes, "latin1").toString("utf8"));
    i++;
  }
  return { source, args };
}

function event(id: string): AgentEventInput {
  return { type: "agent_thinking", event_id: `e-${id}`, run_id: "r", thread_id: "t", ts: new Date().toISOString(), data: { id, text: 'a "quoted" word' } };
}

