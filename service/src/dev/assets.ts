/**
 * The demo page's files, built in memory with esbuild when the dev server
 * starts: the SDK bundle exactly as `npm run build` emits it, and the page's
 * script, which loads that bundle as a separate module (so the page runs the
 * distributable SDK, not a private copy of it).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";
import { BROWSER_TARGET, bundleClient, CLIENT_BUNDLE_NAME, pickJsAndMap } from "../../client/build.js";

export const WEB_DIR = fileURLToPath(new URL("../../web/", import.meta.url));
const SDK_ENTRY = /[\\/]client[\\/]index\.js$/;

export interface Asset {
  readonly type: string;
  readonly body: string;
}

/** URL path → file served by the stand-in. */
export type Assets = ReadonlyMap<string, Asset>;

const JS = "text/javascript; charset=utf-8";
const JSON_TYPE = "application/json; charset=utf-8";

export async function buildAssets(): Promise<Assets> {
  const [client, app, html, css] = await Promise.all([
    bundleClient(),
    bundleApp(),
    readFile(join(WEB_DIR, "index.html"), "utf8"),
    readFile(join(WEB_DIR, "styles.css"), "utf8"),
  ]);
  return new Map<string, Asset>([
    ["/", { type: "text/html; charset=utf-8", body: html }],
    ["/styles.css", { type: "text/css; charset=utf-8", body: css }],
    ["/app.js", { type: JS, body: app.js.text }],
    ["/app.js.map", { type: JSON_TYPE, body: app.map.text }],
    [`/${CLIENT_BUNDLE_NAME}`, { type: JS, body: client.js.text }],
    [`/${CLIENT_BUNDLE_NAME}.map`, { type: JSON_TYPE, body: client.map.text }],
  ]);
}

/** service/web/app.ts imports the SDK as ../client/index.js (type-checked against it); in the browser that is /gateway-client.js. */
const sdkAsSeparateModule: Plugin = {
  name: "sdk-as-separate-module",
  setup(b) {
    b.onResolve({ filter: SDK_ENTRY }, () => ({ path: `./${CLIENT_BUNDLE_NAME}`, external: true }));
  },
};

async function bundleApp() {
  const result = await build({
    entryPoints: [join(WEB_DIR, "app.ts")],
    outfile: "app.js",
    bundle: true,
    format: "esm",
    platform: "browser",
    target: BROWSER_TARGET,
    sourcemap: true,
    write: false,
    logLevel: "silent",
    plugins: [sdkAsSeparateModule],
  });
  return pickJsAndMap(result.outputFiles);
}
