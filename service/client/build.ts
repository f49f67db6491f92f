/**
 * Bundles the SDK for browsers with esbuild: ESM files, minified, with source
 * maps, and their type declarations (esbuild strips types; tsc writes them).
 * `npm run build` (and `npm pack` of the package, by its prepack script) runs
 * this file to write the package @chat-gateway/client into
 * service/client/dist/: index.js (GatewayClient) and tabs.js (the opt-in
 * one-socket-per-browser layer, which imports ./index.js rather than a copy
 * of it). `npm run dev` imports `bundleClient()` and `bundleTabs()` to serve
 * the same bundles from memory.
 *
 * This is a build tool, not part of the SDK: it is never bundled itself.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";
import { build, type BuildOptions, type Plugin } from "esbuild";
import ts from "typescript";

export const CLIENT_ENTRY = fileURLToPath(new URL("./index.ts", import.meta.url));
export const TABS_ENTRY = fileURLToPath(new URL("./tabs/index.ts", import.meta.url));
/** The names the demo page serves the bundles under. */
export const CLIENT_BUNDLE_NAME = "gateway-client.js";
export const TABS_BUNDLE_NAME = "gateway-client-tabs.js";
const REPO_ROOT = resolve(dirname(CLIENT_ENTRY), "../..");
/** The package's own directory (package.json, README, CHANGELOG) and its build output. */
export const PACKAGE_DIR = dirname(CLIENT_ENTRY);
export const PACKAGE_DIST = resolve(PACKAGE_DIR, "dist");
const CLIENT_OUTFILE = resolve(PACKAGE_DIST, "index.js");
const TABS_OUTFILE = resolve(PACKAGE_DIST, "tabs.js");

/** Evergreen browsers and Node 20: ES2022 keeps class fields and `??=` as written. */
export const BROWSER_TARGET = ["es2022", "chrome111", "firefox111", "safari16.4"];

function clientBuildOptions(outfile = CLIENT_OUTFILE, entry = CLIENT_ENTRY): BuildOptions {
  return {
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: BROWSER_TARGET,
    minify: true,
    sourcemap: true,
    legalComments: "none",
    logLevel: "silent",
  };
}

export interface BundleFile {
  readonly path: string;
  readonly text: string;
}

/** The bundle and its source map, in memory (for the dev server and the size budget's test); the file name sets the map's URL. */
export async function bundleClient(outfile = CLIENT_OUTFILE): Promise<{ js: BundleFile; map: BundleFile }> {
  const result = await build({ ...clientBuildOptions(outfile), write: false });
  return pickJsAndMap(result.outputFiles ?? []);
}

/**
 * Imports of the SDK's entries from elsewhere (the tabs layer imports
 * "../index.js", the demo page both) stay imports of separate modules:
 * `specifiers` maps an entry (CLIENT_ENTRY, TABS_ENTRY) to the URL it is
 * loaded from, so a page runs one GatewayClient, not private copies.
 */
export function sdkAsSeparateModules(specifiers: ReadonlyMap<string, string>): Plugin {
  return {
    name: "sdk-as-separate-modules",
    setup(b) {
      b.onResolve({ filter: /[\\/]index\.js$/ }, (args) => {
        const specifier = specifiers.get(resolve(args.resolveDir, args.path).replace(/\.js$/, ".ts"));
        return specifier === undefined ? undefined : { path: specifier, external: true };
      });
    },
  };
}

/** The tabs layer's bundle, importing the SDK from `sdkSpecifier` ("./index.js" in the package). */
export async function bundleTabs(sdkSpecifier = "./index.js", outfile = TABS_OUTFILE): Promise<{ js: BundleFile; map: BundleFile }> {
  const result = await build({ ...clientBuildOptions(outfile, TABS_ENTRY), write: false, plugins: [sdkAsSeparateModules(new Map([[CLIENT_ENTRY, sdkSpecifier]]))] });
  return pickJsAndMap(result.outputFiles ?? []);
}

export function pickJsAndMap(files: ReadonlyArray<{ path: string; text: string }>): { js: BundleFile; map: BundleFile } {
  const js = files.find((f) => f.path.endsWith(".js"));
  const map = files.find((f) => f.path.endsWith(".js.map"));
  if (!js || !map) throw new Error(`esbuild produced ${files.map((f) => f.path).join(", ")}; expected a .js and a .js.map`);
  return { js: { path: js.path, text: js.text }, map: { path: map.path, text: map.text } };
}

/** Writes the package's dist/index.js, dist/tabs.js and their .map files. */
async function writeClientBundles(outDir = PACKAGE_DIST): Promise<BundleFile[]> {
  const [client, tabs] = await Promise.all([
    build({ ...clientBuildOptions(resolve(outDir, "index.js")), write: false }).then((r) => pickJsAndMap(r.outputFiles ?? [])),
    bundleTabs("./index.js", resolve(outDir, "tabs.js")),
  ]);
  const files = [client.js, client.map, tabs.js, tabs.map];
  await mkdir(outDir, { recursive: true });
  await Promise.all(files.map((f) => writeFile(f.path, f.text)));
  return files;
}

/**
 * dist/index.d.ts and dist/tabs.d.ts, so that TypeScript apps get the SDK's
 * types (declarations of service/client and of the two service modules it
 * imports types from, under dist/types/).
 */
async function writeClientDeclarations(outDir = PACKAGE_DIST): Promise<string[]> {
  const typesDir = resolve(outDir, "types");
  const program = ts.createProgram([CLIENT_ENTRY, TABS_ENTRY], {
    declaration: true,
    emitDeclarationOnly: true,
    outDir: typesDir,
    rootDir: resolve(REPO_ROOT, "service"),
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    lib: ["lib.es2023.d.ts", "lib.dom.d.ts"],
    types: [],
    strict: true,
    skipLibCheck: true,
  });
  const result = program.emit();
  const problems = [...ts.getPreEmitDiagnostics(program), ...result.diagnostics];
  if (problems.length > 0) {
    throw new Error(ts.formatDiagnosticsWithColorAndContext(problems, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => REPO_ROOT, getNewLine: () => "\n" }));
  }
  const entries = [
    [resolve(outDir, "index.d.ts"), 'export * from "./types/client/index.js";\n'],
    [resolve(outDir, "tabs.d.ts"), 'export * from "./types/client/tabs/index.js";\n'],
  ] as const;
  await Promise.all(entries.map(([path, text]) => writeFile(path, text)));
  return entries.map(([path]) => path);
}

/** Bytes of `text` gzipped at level 9, as the size budget counts them. */
export function gzipSize(text: string): number {
  return gzipSync(text, { level: 9 }).length;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  await rm(PACKAGE_DIST, { recursive: true, force: true });
  const bundles = await writeClientBundles();
  const declarations = await writeClientDeclarations();
  const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
  const rel = (path: string) => relative(process.cwd(), path);
  for (const f of bundles.filter((b) => b.path.endsWith(".js"))) {
    process.stdout.write(`${rel(f.path)} ${kb(Buffer.byteLength(f.text))} (${kb(gzipSize(f.text))} gzipped)\n`);
  }
  process.stdout.write(`${declarations.map(rel).join(", ")}\n`);
}
