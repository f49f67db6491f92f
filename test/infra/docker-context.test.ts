import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ROOT } from "./harness.js";

/**
 * The image's build context (`gcloud builds submit .`, `docker build .`):
 * .dockerignore keeps local node_modules, tests, infra, Pulumi files and
 * secrets out, and keeps everything the Dockerfile copies in.
 */
const ignored = readFileSync(`${ROOT}.dockerignore`, "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));
const copied = [...readFileSync(`${ROOT}Dockerfile`, "utf8").matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));

/** Enough of Docker's matching for these patterns: a name, a trailing `*`, or `*.ext`. */
function isIgnored(path: string): boolean {
  return ignored.some((pattern) => {
    const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")}(?:/.*)?$`);
    return re.test(path);
  });
}

describe(".dockerignore", () => {
  it("keeps out local dependencies, tests, infra, Pulumi files and env files", () => {
    for (const path of ["node_modules", "node_modules/ws/index.js", "test/infra/harness.ts", "infra/index.ts", "Pulumi.production.yaml", ".env", ".env.local", ".git", "dist"]) {
      expect(isIgnored(path), path).toBe(true);
    }
  });

  it("keeps in everything the Dockerfile copies", () => {
    expect(copied).toEqual(expect.arrayContaining(["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "service"]));
    for (const path of [...copied, "service/src/main.ts", "service/client/build.ts"]) expect(isIgnored(path), path).toBe(false);
  });
});
