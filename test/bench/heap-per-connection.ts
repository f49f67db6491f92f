/**
 * Memory profile behind bench 4: what a gateway (or bare ws) process keeps
 * per idle connection. Starts the server with --inspect on loopback, takes a
 * heap snapshot (inspector protocol; a snapshot starts with a full GC)
 * before and after opening N connections, and prints the difference by
 * constructor: objects per connection and bytes per connection (self size).
 *
 *   npx tsx test/bench/heap-per-connection.ts [--n 2000] [--bare] [--top 40]
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import WebSocket from "ws";
import { startRedis } from "../support/redis-server.js";
import { gatewayEnv, ORIGIN, TEST_JWT_KEY, users } from "./lib/context.js";
import { spawnLoadGen } from "./lib/loadgen.js";
import { held, LOG_DIR, spawnGatewayProc, spawnHelperServer, type NodeProc } from "./lib/procs.js";
import { sleep, table } from "./lib/stats.js";

const argValue = (name: string, def: number) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const N = argValue("--n", 2000);
const TOP = argValue("--top", 40);
const bare = process.argv.includes("--bare");

async function snapshot(proc: NodeProc): Promise<Map<string, { count: number; size: number }>> {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(proc.log());
  if (!m) throw new Error("no inspector");
  const ws = new WebSocket(m[1]!, { maxPayload: 1024 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  const chunks: string[] = [];
  const done = new Promise<void>((resolve) => {
    ws.on("message", (data) => {
      const msg = JSON.parse(data.toString()) as { id?: number; method?: string; params?: { chunk?: string } };
      if (msg.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(msg.params!.chunk!);
      if (msg.id === 1) resolve();
    });
  });
  ws.send(JSON.stringify({ id: 1, method: "HeapProfiler.takeHeapSnapshot", params: { reportProgress: false } }));
  await done;
  ws.close();
  const text = chunks.join("");
  writeFileSync(join(LOG_DIR, `${proc.name}-${Date.now()}.heapsnapshot`), text);
  const snap = JSON.parse(text) as { snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }; nodes: number[]; strings: string[] };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const iType = fields.indexOf("type");
  const iName = fields.indexOf("name");
  const iSize = fields.indexOf("self_size");
  const out = new Map<string, { count: number; size: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType]!]!;
    let name = snap.strings[snap.nodes[i + iName]!]!;
    if (type === "string" || type === "concatenated string" || type === "sliced string") name = "(string)";
    else if (type === "code") name = "(code)";
    else if (type === "number") name = "(number)";
    const key = `${type === "object" || type === "closure" ? "" : `${type}: `}${name.slice(0, 70)}`;
    const e = out.get(key) ?? { count: 0, size: 0 };
    e.count++;
    e.size += snap.nodes[i + iSize]!;
    out.set(key, e);
  }
  return out;
}

const redis = await startRedis();
const server = bare
  ? await spawnHelperServer("test/bench/servers/bare.ts", { args: ["ws"], name: "heap-bare", nodeArgs: ["--inspect=127.0.0.1:0"] })
  : await spawnGatewayProc({ env: gatewayEnv(redis.url), name: "heap-gateway", nodeArgs: ["--inspect=127.0.0.1:0"] });
const lg = await spawnLoadGen("heap-load", undefined);
try {
  await lg.call("mintTokens", { key: TEST_JWT_KEY, users: users("heap", N + 200) });
  // Warm the code paths first (a few hundred connects that close again), so compiled code is in both snapshots.
  await lg.call("idleOpen", { port: server.port, mode: bare ? "bare" : "gateway", count: 200, concurrency: 32, origin: ORIGIN });
  await lg.call("idleClose");
  await sleep(1000);
  const before = await snapshot(server);
  const opened = await lg.call<{ open: number }>("idleOpen", { port: server.port, mode: bare ? "bare" : "gateway", count: N, concurrency: 32, origin: ORIGIN });
  await sleep(2000);
  const after = await snapshot(server);
  const rows: Array<[string, number, number]> = [];
  for (const [key, a] of after) {
    const b = before.get(key) ?? { count: 0, size: 0 };
    rows.push([key, (a.count - b.count) / opened.open, (a.size - b.size) / opened.open]);
  }
  rows.sort((x, y) => y[2] - x[2]);
  const total = rows.reduce((s, r) => s + r[2], 0);
  process.stdout.write(`${bare ? "bare ws" : "gateway"}: ${opened.open} connections, ${(total / 1024).toFixed(2)} KiB of JS heap (self sizes) per connection\n\n`);
  process.stdout.write(
    `${table(
      ["constructor / kind", "objects per connection", "bytes per connection"],
      rows.slice(0, TOP).map(([k, c, s]) => [k, c.toFixed(2), s.toFixed(0)]),
    )}\n`,
  );
  await lg.call("idleClose");
} finally {
  await lg.close();
  await server.stop();
  await held(redis.stop());
}
