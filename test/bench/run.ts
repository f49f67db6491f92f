/**
 * `npm run bench` (`tsx test/bench/run.ts`): runs the benchmarks of
 * docs/benchmarks.md side by side with their baselines and prints markdown
 * tables, then the targets, met or missed.
 *
 *   --only 1,3        run some benchmarks
 *   --rounds N        rounds per comparison (default 3; medians are quoted)
 *   --seconds S       measurement window of the rate benchmarks (default 3)
 *   --idle-conns N    bench 4 size (default 10000)
 *   --storm-clients N bench 6 size (default 5000)
 *   --delivery-users N bench 5 size (default 1000)
 *   --no-pin          do not pin processes to CPUs
 *   --quiet-wait MS   before each round, wait up to MS for the shared machine to be under 30% busy (default 5000; 0: never)
 *   --gateway-env K=V,K=V  extra settings for every gateway (to measure a configuration change)
 *   --gateway-root D  run the gateway from another checkout D (to measure a proposed change)
 *   --cpu-prof        write a V8 CPU profile of every gateway process (.tmp/bench-logs/<run>/profiles)
 *   --json FILE       also write every figure as JSON
 *   --md FILE         also write the tables as markdown
 *
 * Every figure is measured in this run; nothing is read from earlier runs.
 * The process exits 0 whether targets are met or not (it is a measurement),
 * and 1 only when a benchmark could not run.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { DEFAULT_PROFILE_DIR, setGatewayEnv, type BenchOptions, type BenchResult } from "./lib/context.js";
import { cpuPlan, LOG_DIR, noiseMeter, pinSelf, ROOT, setGatewayRoot } from "./lib/procs.js";
import { setQuietWait } from "./lib/rounds.js";
import { table } from "./lib/stats.js";

type Bench = { id: string; load: () => Promise<{ run: (o: BenchOptions) => Promise<BenchResult> }> };
const BENCHES: Bench[] = [
  { id: "1", load: () => import("./01-ticket-issuance.js") },
  { id: "2", load: () => import("./02-redeem-connect.js") },
  { id: "3", load: () => import("./03-full-connect.js") },
  { id: "4", load: () => import("./04-idle-connections.js") },
  { id: "5", load: () => import("./05-cross-instance-delivery.js") },
  { id: "6", load: () => import("./06-reconnect-storm.js") },
];

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string) => process.argv.includes(name);
const num = (name: string, def: number) => {
  const v = arg(name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
  return n;
};

const gatewayEnvArg = arg("--gateway-env");
if (gatewayEnvArg) setGatewayEnv(Object.fromEntries(gatewayEnvArg.split(",").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)])));
const gatewayRootArg = arg("--gateway-root");
if (gatewayRootArg) setGatewayRoot(gatewayRootArg);
setQuietWait(arg("--quiet-wait") === "0" ? 0 : num("--quiet-wait", 5000));
const only = arg("--only")?.split(",").map((s) => s.trim());
const plan = cpuPlan(!flag("--no-pin"));
pinSelf(plan.load);

const options: BenchOptions = {
  rounds: num("--rounds", 3),
  seconds: num("--seconds", 3),
  plan,
  profile: flag("--cpu-prof"),
  profileDir: DEFAULT_PROFILE_DIR,
  sizes: {
    idleConnections: num("--idle-conns", 10_000),
    stormClients: num("--storm-clients", 5000),
    deliveryUsers: num("--delivery-users", 1000),
  },
  log: (message) => process.stderr.write(`${message}\n`),
};

/** The gateway code that was measured: the commit, and whether service/ had uncommitted changes. */
function codeVersion(): string {
  if (gatewayRootArg) return `from ${gatewayRootArg}${gatewayEnvArg ? `, with ${gatewayEnvArg}` : ""}`;
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT }).toString().trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "service"], { cwd: ROOT }).toString().trim() !== "";
    return `${head}${dirty ? " + uncommitted changes in service/" : ""}${gatewayEnvArg ? `, with ${gatewayEnvArg}` : ""}`;
  } catch {
    return "unknown";
  }
}
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "CPU"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${process.platform} ${process.arch}`;
const started = Date.now();
const out: string[] = [
  `# Benchmark run ${new Date().toISOString()}`,
  "",
  `Machine: ${machine}. ${plan.describe()}.`,
  `Gateway code: ${codeVersion()}.`,
  `Rounds: ${options.rounds} (medians quoted, with min–max), window ${options.seconds} s. Logs: ${LOG_DIR}`,
  "",
];
process.stdout.write(`${out.join("\n")}\n`);

const results: BenchResult[] = [];
let broken = 0;
for (const bench of BENCHES) {
  if (only && !only.includes(bench.id)) continue;
  const t0 = Date.now();
  options.log(`── bench ${bench.id} ──`);
  try {
    const mod = await bench.load();
    const noise = noiseMeter();
    const result = await mod.run(options);
    const { othersPercent } = noise();
    results.push(result);
    (result as { othersPercent?: number }).othersPercent = othersPercent;
    const footer = `_(${Math.round((Date.now() - t0) / 1000)} s; other processes on this shared machine used ${othersPercent.toFixed(0)}% of its CPU meanwhile)_`;
    const text = [`## ${result.id}. ${result.title}`, "", ...result.sections.flatMap((s) => [s, ""]), footer, ""].join("\n");
    out.push(text);
    process.stdout.write(`${text}\n`);
  } catch (err) {
    broken++;
    const text = `## ${bench.id}. FAILED TO RUN\n\n\`\`\`\n${(err as Error).stack ?? String(err)}\n\`\`\`\n`;
    out.push(text);
    process.stdout.write(`${text}\n`);
  }
}

const targets = results.flatMap((r) => r.targets);
const summary = [
  "## Targets",
  "",
  table(
    ["bench", "target", "measured", "result"],
    targets.map((t) => [t.bench, t.target, t.measured, t.met === undefined ? "reported" : t.met ? "met" : "MISSED"]),
  ),
  "",
  `${targets.filter((t) => t.met === true).length} met, ${targets.filter((t) => t.met === false).length} missed, ${broken} benchmark(s) failed to run; ${Math.round((Date.now() - started) / 1000)} s in all.`,
];
out.push(...summary);
process.stdout.write(`${summary.join("\n")}\n`);

const jsonPath = arg("--json");
if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ machine, plan: plan.describe(), options: { ...options, log: undefined }, results }, null, 2));
const mdPath = arg("--md");
if (mdPath) writeFileSync(mdPath, `${out.join("\n")}\n`);
process.exit(broken > 0 ? 1 : 0);
