/**
 * `npm start`'s prestart: builds dist/ only when a source is newer than what
 * was built from it, so that starting an unchanged checkout takes a second,
 * not the 11-16 s of a full `npm run build`.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** What dist/ is built from: the service (the client bundle imports errors.ts from it), the SDK, and the build's settings. */
export const INPUTS = ["service/src", "service/client", "tsconfig.json", "tsconfig.build.json", "package-lock.json"];
/** In INPUTS but not inputs of the build: `npm run dev` only (tsconfig.build.json excludes it), and the SDK's own output. */
const IGNORED = ["service/src/dev/", "service/client/dist/"];
/** One file of each build step: tsc's entry point and the SDK bundle. */
export const OUTPUTS = ["dist/service/src/main.js", "service/client/dist/index.js"];

/** Why dist/ must be built, or undefined when every output is newer than every input. */
export function staleReason(root: string, inputs = INPUTS, outputs = OUTPUTS): string | undefined {
  let oldestOutput = Infinity;
  for (const output of outputs) {
    const mtime = mtimeOf(join(root, output));
    if (mtime === undefined) return `${output} does not exist`;
    oldestOutput = Math.min(oldestOutput, mtime);
  }
  for (const input of inputs) {
    for (const file of filesUnder(join(root, input)).filter((path) => !IGNORED.some((ignored) => relative(root, path).startsWith(ignored)))) {
      if (mtimeOf(file)! > oldestOutput) return `${relative(root, file)} changed after the last build`;
    }
  }
  return undefined;
}

function mtimeOf(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

function filesUnder(path: string): string[] {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    return [];
  }
  if (!stat.isDirectory()) return [path];
  return readdirSync(path).flatMap((name) => filesUnder(join(path, name)));
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const reason = staleReason(root);
  if (reason === undefined) {
    process.stderr.write("dist/ is up to date with the sources: starting without a build (npm run build forces one)\n");
  } else {
    process.stderr.write(`building dist/ first: ${reason}\n`);
    const build = spawnSync("npm", ["run", "build"], { cwd: root, stdio: "inherit" });
    process.exit(build.status ?? 1);
  }
}
