/**
 * `npm run drill` (`tsx test/drill/run.ts`): runs the fault drills, each in
 * its own process (a drill that crashes or hangs cannot take the others
 * with it), prints each drill's PASS/FAIL line as it comes, then
 * `N passed, N failed`, and exits 1 if any failed.
 *
 *   --quick      the CI set: drills 3-10 and drill 1 at a smaller size (drill 8, the four secret rotations, 35-70 s;
 *                drill 9, the JWKS outage, 8 s instead of 30 s, about 25 s; drill 10, hostile neighbours, about 1 min)
 *   --only 1,4   some drills
 *
 * Sizes can be set through the environment (DRILL2_SOCKETS, DRILL3_FRAMES,
 * DRILL4_CASES, DRILL5_GUESSES, DRILL9_OUTAGE_MS) and the fuzzers' seeds replayed
 * (DRILL3_SEED, DRILL4_SEED); every drill prints its seed.
 */
import { spawn } from "node:child_process";
import { ROOT } from "../bench/lib/procs.js";

const DRILLS = [
  { id: "1", file: "test/drill/01-redis-killed.ts", quick: true },
  { id: "2", file: "test/drill/02-sigterm-under-load.ts", quick: false },
  { id: "3", file: "test/drill/03-frame-fuzz.ts", quick: true },
  { id: "4", file: "test/drill/04-http-fuzz.ts", quick: true },
  { id: "5", file: "test/drill/05-ticket-guessing.ts", quick: true },
  { id: "6", file: "test/drill/06-secret-missing.ts", quick: true },
  { id: "7", file: "test/drill/cluster-failover.ts", quick: true },
  { id: "8", file: "test/drill/08-rotation.ts", quick: true },
  { id: "9", file: "test/drill/09-jwks-outage.ts", quick: true },
  { id: "10", file: "test/drill/10-hostile-neighbours.ts", quick: true },
];

const quick = process.argv.includes("--quick") || process.env.DRILL_QUICK === "1";
const onlyAt = process.argv.indexOf("--only");
const only = onlyAt >= 0 ? process.argv[onlyAt + 1]?.split(",") : undefined;
/** A drill that outlives this is killed and counted as failed (each drill also has its own, shorter limit). */
const HARD_LIMIT_MS = quick ? 120_000 : 600_000;

function runOne(file: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", file, ...(quick ? ["--quick"] : [])], {
      cwd: ROOT,
      env: process.env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
      process.stdout.write(d);
    });
    const timer = setTimeout(() => {
      process.stdout.write(`FAIL ${file}: killed after ${HARD_LIMIT_MS / 1000} s\n`);
      child.kill("SIGKILL");
    }, HARD_LIMIT_MS);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

const started = Date.now();
let passed = 0;
let failed = 0;
for (const d of DRILLS) {
  if (only ? !only.includes(d.id) : quick && !d.quick) continue;
  const { code, output } = await runOne(d.file);
  if (code === 0 && /^PASS /m.test(output)) passed++;
  else failed++;
}
process.stdout.write(`${passed} passed, ${failed} failed (${Math.round((Date.now() - started) / 1000)} s${quick ? ", quick" : ""})\n`);
process.exit(failed === 0 ? 0 : 1);
