import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { staleReason } from "../../service/buildIfStale.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A checkout with files at the given ages (seconds before now). */
function checkout(files: Record<string, number>): string {
  const root = mkdtempSync(join(tmpdir(), "gw-start-"));
  dirs.push(root);
  const now = Date.now() / 1000;
  for (const [path, age] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), "x");
    utimesSync(join(root, path), now - age, now - age);
  }
  return root;
}

const inputs = ["service/src", "service/client", "tsconfig.json"];
const outputs = ["dist/service/src/main.js", "service/client/dist/index.js"];

describe("npm start's prestart", () => {
  it("skips the build when every output is newer than every source", () => {
    const root = checkout({ "service/src/a.ts": 100, "service/client/b.ts": 90, "tsconfig.json": 500, "dist/service/src/main.js": 50, "service/client/dist/index.js": 40 });
    expect(staleReason(root, inputs, outputs)).toBeUndefined();
  });

  it("builds when a source in a nested folder changed after the last build", () => {
    const root = checkout({ "service/src/realtime/hub.ts": 10, "tsconfig.json": 500, "dist/service/src/main.js": 50, "service/client/dist/index.js": 40 });
    expect(staleReason(root, inputs, outputs)).toBe("service/src/realtime/hub.ts changed after the last build");
  });

  it("ignores service/src/dev/, which dist/ does not hold (npm run dev only)", () => {
    const root = checkout({ "service/src/dev/run.ts": 5, "service/src/a.ts": 100, "dist/service/src/main.js": 50, "service/client/dist/index.js": 40 });
    expect(staleReason(root, inputs, outputs)).toBeUndefined();
  });

  it("does not count the SDK's own output, written after its first file, as a changed source", () => {
    const root = checkout({ "service/src/a.ts": 100, "dist/service/src/main.js": 50, "service/client/dist/index.js": 40, "service/client/dist/tabs.js": 39 });
    expect(staleReason(root, inputs, outputs)).toBeUndefined();
  });

  it("builds when an output is missing (a fresh checkout)", () => {
    const root = checkout({ "service/src/a.ts": 100, "dist/service/src/main.js": 50 });
    expect(staleReason(root, inputs, outputs)).toBe("service/client/dist/index.js does not exist");
  });
});
