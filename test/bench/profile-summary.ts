/**
 * Reads a V8 .cpuprofile (from `--cpu-prof`) and prints where the time went:
 * the heaviest functions by self time, and the time per area (a package
 * under node_modules, a gateway source file, Node's internals, GC, idle).
 *
 *   npx tsx test/bench/profile-summary.ts FILE.cpuprofile [--top 30] [--inclusive PATTERN]
 *
 * `--callers PATTERN` prints the heaviest call paths (8 frames up) into the
 * functions whose name or file matches, by the self time spent there.
 * `--inclusive PATTERN` also prints the total (self + callees) time of every
 * function whose name or file matches the pattern.
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (!file) {
  process.stderr.write("usage: profile-summary FILE.cpuprofile [--top N] [--inclusive PATTERN]\n");
  process.exit(2);
}
const topIndex = process.argv.indexOf("--top");
const top = topIndex > 0 ? Number(process.argv[topIndex + 1]) : 30;
const callersIndex = process.argv.indexOf("--callers");
const callersPattern = callersIndex > 0 ? new RegExp(process.argv[callersIndex + 1]!) : undefined;
const incIndex = process.argv.indexOf("--inclusive");
const inclusivePattern = incIndex > 0 ? new RegExp(process.argv[incIndex + 1]!) : undefined;

const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Self time per node from the samples and their time deltas (µs).
const self = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]!;
  const dt = profile.timeDeltas[i + 1] ?? 0;
  self.set(id, (self.get(id) ?? 0) + dt);
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

function area(url: string, name: string): string {
  if (name === "(garbage collector)") return "GC";
  if (name === "(idle)") return "idle";
  if (name === "(program)") return "(program: native, not attributed)";
  if (url === "") return "native/builtin";
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `pkg ${nm[1]}`;
  if (url.startsWith("node:")) return `node ${url.slice(5).split("/")[0]}`;
  const svc = /\/(service\/src\/.*)$/.exec(url);
  if (svc) return svc[1]!;
  return url.replace(/^file:\/\//, "");
}

const fnKey = (n: Node) => `${n.callFrame.functionName || "(anonymous)"}  ${n.callFrame.url.replace(/^.*\/(node_modules\/|service\/)/, "$1")}:${n.callFrame.lineNumber + 1}`;
const fnSelf = new Map<string, number>();
const areaSelf = new Map<string, number>();
for (const [id, t] of self) {
  const n = byId.get(id)!;
  fnSelf.set(fnKey(n), (fnSelf.get(fnKey(n)) ?? 0) + t);
  const a = area(n.callFrame.url, n.callFrame.functionName);
  areaSelf.set(a, (areaSelf.get(a) ?? 0) + t);
}

const pct = (t: number) => `${((t / total) * 100).toFixed(1).padStart(5)}%`;
const busy = total - (areaSelf.get("idle") ?? 0);
process.stdout.write(`${file}\nsampled ${(total / 1e6).toFixed(2)} s, of which busy ${(busy / 1e6).toFixed(2)} s (${pct(busy)})\n\n`);
process.stdout.write("by area (self time)\n");
for (const [a, t] of [...areaSelf].sort((x, y) => y[1] - x[1]).slice(0, 25)) process.stdout.write(`  ${pct(t)}  ${(t / 1000).toFixed(0).padStart(7)} ms  ${a}\n`);
process.stdout.write(`\ntop ${top} functions (self time)\n`);
for (const [f, t] of [...fnSelf].sort((x, y) => y[1] - x[1]).slice(0, top)) process.stdout.write(`  ${pct(t)}  ${(t / 1000).toFixed(0).padStart(7)} ms  ${f}\n`);

if (inclusivePattern) {
  // Inclusive time: a sample counts once for every distinct matching function on its stack.
  const inclusive = new Map<string, number>();
  for (const [id, t] of self) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const key = fnKey(n);
      if (seen.has(key)) continue;
      seen.add(key);
      if (inclusivePattern.test(key)) inclusive.set(key, (inclusive.get(key) ?? 0) + t);
    }
  }
  process.stdout.write(`\ninclusive time of functions matching ${inclusivePattern}\n`);
  for (const [f, t] of [...inclusive].sort((x, y) => y[1] - x[1]).slice(0, top)) process.stdout.write(`  ${pct(t)}  ${(t / 1000).toFixed(0).padStart(7)} ms  ${f}\n`);
}

if (callersPattern) {
  const paths = new Map<string, number>();
  for (const [id, t] of self) {
    if (!callersPattern.test(fnKey(byId.get(id)!))) continue;
    const frames: string[] = [];
    for (let cur: number | undefined = id; cur !== undefined && frames.length < 8; cur = parent.get(cur)) frames.push(fnKey(byId.get(cur)!));
    const key = frames.join("\n      ← ");
    paths.set(key, (paths.get(key) ?? 0) + t);
  }
  process.stdout.write(`\ncall paths into ${callersPattern}\n`);
  for (const [f, t] of [...paths].sort((x, y) => y[1] - x[1]).slice(0, Math.min(top, 12))) process.stdout.write(`  ${pct(t)}  ${(t / 1000).toFixed(0).padStart(7)} ms  ${f}\n`);
}
