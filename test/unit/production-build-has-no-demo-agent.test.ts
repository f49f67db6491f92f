import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * The gateway contains no agent: chat messages go to the agent backend by
 * webhook (docs/protocol.md §5a), and the example backend lives in
 * service/examples/agent, beside the gateway, never in it. Checked on what
 * production runs: the modules main.ts reaches, and what `npm run build`
 * compiles (tsconfig.build.json, which the Dockerfile builds).
 */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const rel = (path: string) => relative(ROOT, path).split("\\").join("/");

/** Every project module main.ts imports, statically or dynamically, transitively. */
function importGraph(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(file, "utf8");
    for (const match of source.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["'](\.{1,2}\/[^"']+)["']/g)) {
      const target = resolve(dirname(file), match[1]!).replace(/\.js$/, ".ts");
      expect(existsSync(target), `${rel(file)} imports ${match[1]}`).toBe(true);
      visit(target);
    }
  };
  visit(entry);
  return seen;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]));
}

describe("the production build", () => {
  const graph = [...importGraph(join(ROOT, "service/src/main.ts"))].map(rel);

  it("reaches no example agent and no development module from main.ts", () => {
    expect(graph.length).toBeGreaterThan(20); // the walk found the app, not just the entry
    expect(graph).toContain("service/src/realtime/chatHandoff.ts");
    expect(graph.filter((f) => f.startsWith("service/examples/") || f.startsWith("service/src/dev/") || !f.startsWith("service/src/"))).toEqual([]);
  });

  it("compiles service/src only, without service/src/dev: the example agent is not in dist/", () => {
    const build = JSON.parse(readFileSync(join(ROOT, "tsconfig.build.json"), "utf8")) as { include: string[]; exclude: string[] };
    expect(build.include).toEqual(["service/src/**/*.ts"]);
    expect(build.exclude).toContain("service/src/dev/**");
    expect(readFileSync(join(ROOT, "Dockerfile"), "utf8")).toMatch(/npm run build/);
  });

  it("holds no agent code: no agent module, and nothing outside dev/ names the example agent", () => {
    expect(existsSync(join(ROOT, "service/src/agent"))).toBe(false);
    const gatewayFiles = filesUnder(join(ROOT, "service/src")).filter((f) => !rel(f).startsWith("service/src/dev/"));
    for (const file of gatewayFiles) {
      const source = readFileSync(file, "utf8");
      expect(source, rel(file)).not.toMatch(/examples\/agent\/|demoAgent|createDemoAgent/);
    }
  });
});
