/**
 * `npm pack` of the SDK, installed the way a front-end team installs it: a
 * scratch project outside this repository installs the tarball (offline: the
 * package has no dependencies), type-checks an example against it, bundles
 * the example with esbuild and runs the bundle. What the tarball holds and
 * what its package.json promises are checked too.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PROTOCOL_REVISION } from "../../service/client/index.js";

const run = promisify(execFile);
const REPO = fileURLToPath(new URL("../../", import.meta.url));
const PACKAGE_DIR = join(REPO, "service/client");
const TSC = join(REPO, "node_modules/typescript/bin/tsc");

let scratch: string;
let tarball: string;

const EXAMPLE = `
import { GatewayClient, PROTOCOL_REVISION, describeCode, type AgentEvent, type StateChange, type WebSocketLike } from "@chat-gateway/client";
import { createGatewayClient, SharedGatewayClient, type ChatClient } from "@chat-gateway/client/tabs";

class NoSocket implements WebSocketLike {
  readonly readyState = 3;
  onopen = null; onmessage = null; onclose = null; onerror = null;
  send(): void {}
  close(): void {}
}
const url = "https://chat.example.test";
const getToken = async () => "a-token";
const plain: ChatClient = new GatewayClient({ url, getToken, WebSocket: NoSocket, window: null });
const shared: ChatClient = createGatewayClient({ url, getToken, WebSocket: NoSocket, window: null, shareAcrossTabs: true, share: { key: "alice", locks: null } });
plain.on("event", (e: AgentEvent) => console.log(e.seq + 1));
shared.on("state", (s: StateChange) => console.log(s.reason.length));
// Never called: only the type-checker reads it.
export const misuse = () =>
  // @ts-expect-error getToken is required: the declarations are real, not any
  new GatewayClient({ url });
const revision: 2 = PROTOCOL_REVISION;
console.log(JSON.stringify({ revision, plain: plain.state, shared: shared instanceof SharedGatewayClient, reason: describeCode("SESSION_REVOKED").length > 0 }));
`;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "gw-sdk-scratch-"));
  // npm pack runs the package's prepack script: the tarball is built from this checkout's sources.
  await run("npm", ["pack", "--pack-destination", scratch, "--loglevel", "error"], { cwd: PACKAGE_DIR, timeout: 120_000 });
  const packed = (await readdir(scratch)).filter((f) => f.endsWith(".tgz"));
  expect(packed).toHaveLength(1);
  tarball = join(scratch, packed[0]!);
  const app = join(scratch, "app");
  await run("mkdir", ["-p", app]);
  await writeFile(join(app, "package.json"), JSON.stringify({ name: "scratch-app", private: true, type: "module" }));
  await run("npm", ["install", tarball, "--offline", "--no-audit", "--no-fund", "--loglevel", "error"], { cwd: app, timeout: 120_000 });
}, 180_000);

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe("the packed SDK", () => {
  it("holds the bundles, their maps and declarations, the README and CHANGELOG, and no sources", async () => {
    const { stdout } = await run("tar", ["-tzf", tarball]);
    const files = stdout.split("\n").filter(Boolean).map((f) => f.replace(/^package\//, ""));
    for (const f of ["package.json", "README.md", "CHANGELOG.md", "dist/index.js", "dist/index.js.map", "dist/index.d.ts", "dist/tabs.js", "dist/tabs.js.map", "dist/tabs.d.ts"]) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
  });

  it("states the protocol revision it speaks, has no runtime dependencies and no side effects", async () => {
    const pkg = JSON.parse(await readFile(join(scratch, "app/node_modules/@chat-gateway/client/package.json"), "utf8")) as Record<string, unknown>;
    expect(pkg.dependencies).toBeUndefined();
    expect(pkg.peerDependencies).toBeUndefined();
    expect(pkg.sideEffects).toBe(false);
    expect(pkg.type).toBe("module");
    expect(pkg.protocolRevision).toBe(PROTOCOL_REVISION);
    expect(Number(String(pkg.version).split(".")[0])).toBe(PROTOCOL_REVISION);
    const changelog = await readFile(join(scratch, "app/node_modules/@chat-gateway/client/CHANGELOG.md"), "utf8");
    expect(changelog).toContain(`## ${String(pkg.version)}`);
  });

  it("type-checks an example in a scratch project (NodeNext resolution, strict)", async () => {
    const app = join(scratch, "app");
    await writeFile(join(app, "example.ts"), EXAMPLE);
    const tsconfig = {
      compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2023", "DOM"], types: [], strict: true, noEmit: true },
      files: ["example.ts"],
    };
    await writeFile(join(app, "tsconfig.json"), JSON.stringify(tsconfig));
    const result = await run(process.execPath, [TSC, "-p", app], { cwd: app }).catch((err: { stdout: string }) => ({ stdout: err.stdout, failed: true }));
    expect(result.stdout).toBe("");
    expect("failed" in result).toBe(false);
  });

  it("fails the type-check when the example misuses the SDK", async () => {
    const app = join(scratch, "app");
    await writeFile(join(app, "wrong.ts"), `import { GatewayClient } from "@chat-gateway/client";\nnew GatewayClient({ url: 1, getToken: async () => "t" });\n`);
    await writeFile(join(app, "tsconfig.wrong.json"), JSON.stringify({ extends: "./tsconfig.json", files: ["wrong.ts"] }));
    const error = await run(process.execPath, [TSC, "-p", join(app, "tsconfig.wrong.json")], { cwd: app }).then(
      () => undefined,
      (err: { stdout: string }) => err.stdout,
    );
    expect(error).toMatch(/wrong\.ts.*error TS2322/s);
  });

  it("bundles the example with esbuild from the installed package alone (one copy of GatewayClient), and the bundle runs", async () => {
    const app = join(scratch, "app");
    await writeFile(join(app, "example.ts"), EXAMPLE);
    const outfile = join(app, "out.js");
    const result = await build({ entryPoints: [join(app, "example.ts")], outfile, bundle: true, format: "esm", platform: "browser", metafile: true, logLevel: "silent" });
    const inputs = Object.keys(result.metafile.inputs).map((p) => resolve(app, p));
    const fromPackage = inputs.filter((p) => p.includes(join("node_modules", "@chat-gateway", "client", "dist")));
    expect(inputs.filter((p) => !p.endsWith("example.ts"))).toEqual(fromPackage);
    expect(fromPackage.map((p) => p.split("/").pop()).sort()).toEqual(["index.js", "tabs.js"]);
    const bundled = await readFile(outfile, "utf8");
    expect(bundled.split("no global WebSocket").length - 1).toBe(1);
    const { stdout } = await run(process.execPath, [outfile], { cwd: app });
    expect(JSON.parse(stdout.trim().split("\n").pop()!)).toEqual({ revision: 2, plain: "closed", shared: true, reason: true });
  });
});
