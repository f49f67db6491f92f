/**
 * Bundles the SDK for browsers with esbuild: one ESM file, minified, with a
 * source map, and its type declarations (esbuild strips types; tsc writes
 * them). `npm run build` runs this file (`tsx service/client/build.ts`) to
 * write dist/client/; `npm run dev` imports `bundleClient()` to serve the
 * same bundle from memory.
 *
 * This is a build tool, not part of the SDK: it is never bundled itself.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build, type BuildOptions } from "esbuild";
import ts from "typescript";

export const CLIENT_ENTRY = fileURLToPath(new URL("./index.ts", import.meta.url));
export const CLIENT_BUNDLE_NAME = "gateway-client.js";
const REPO_ROOT = resolve(dirname(CLIENT_ENTRY), "../..");
export const CLIENT_OUTFILE = resolve(REPO_ROOT, "dist/client", CLIENT_BUNDLE_NAME);

/** Evergreen browsers and Node 20: ES2022 keeps class fields and `??=` as written. */
export const BROWSER_TARGET = ["es2022", "chrome111", "firefox111", "safari16.4"];

export function clientBuildOptions(outfile = CLIENT_OUTFILE): BuildOptions {
  return {
    entryPoints: [CLIENT_ENTRY],
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

/** The bundle and its source map, in memory (for the dev server). */
export async function bundleClient(): Promise<{ js: BundleFile; map: BundleFile }> {
  const result = await build({ ...clientBuildOptions(), write: false });
  return pickJsAndMap(result.outputFiles ?? []);
}

export function pickJsAndMap(files: ReadonlyArray<{ path: string; text: string }>): { js: BundleFile; map: BundleFile } {
  const js = files.find((f) => f.path.endsWith(".js"));
  const map = files.find((f) => f.path.endsWith(".js.map"));
  if (!js || !map) throw new Error(`esbuild produced ${files.map((f) => f.path).join(", ")}; expected a .js and a .js.map`);
  return { js: { path: js.path, text: js.text }, map: { path: map.path, text: map.text } };
}

/** Writes dist/client/gateway-client.js and its .map. */
export async function writeClientBundle(outfile = CLIENT_OUTFILE): Promise<{ js: BundleFile; map: BundleFile }> {
  const result = await build({ ...clientBuildOptions(outfile), write: false });
  const { js, map } = pickJsAndMap(result.outputFiles ?? []);
  await mkdir(dirname(outfile), { recursive: true });
  await Promise.all([writeFile(js.path, js.text), writeFile(map.path, map.text)]);
  return { js, map };
}

/**
 * dist/client/gateway-client.d.ts, so that TypeScript apps importing the
 * bundle get the SDK's types (declarations of service/client and of the one
 * service module it imports, errors.ts, under dist/client/types/).
 */
export async function writeClientDeclarations(outDir = dirname(CLIENT_OUTFILE)): Promise<string> {
  const typesDir = resolve(outDir, "types");
  const program = ts.createProgram([CLIENT_ENTRY], {
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
  const entry = resolve(outDir, CLIENT_BUNDLE_NAME.replace(/\.js$/, ".d.ts"));
  await writeFile(entry, 'export * from "./types/client/index.js";\n');
  return entry;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const { js, map } = await writeClientBundle();
  const declarations = await writeClientDeclarations();
  const kb = (text: string) => `${(Buffer.byteLength(text) / 1024).toFixed(1)} KiB`;
  const rel = (path: string) => relative(process.cwd(), path);
  process.stdout.write(`${rel(js.path)} ${kb(js.text)}, ${rel(map.path)} ${kb(map.text)}, ${rel(declarations)}\n`);
}
