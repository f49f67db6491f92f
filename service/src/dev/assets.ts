/**
 * The demo page's files, built in memory with esbuild when the dev server
 * starts: the SDK bundle exactly as `npm run build` emits it, and the page's
 * script, which loads that bundle as a separate module (so the page runs the
 * distributable SDK, not a private copy of it).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import {
  BROWSER_TARGET,
  bundleClient,
  bundleTabs,
  CLIENT_BUNDLE_NAME,
  CLIENT_ENTRY,
  PACKAGE_DIST,
  pickJsAndMap,
  sdkAsSeparateModules,
  TABS_BUNDLE_NAME,
  TABS_ENTRY,
} from "../../client/build.js";

const WEB_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

export interface Asset {
  readonly type: string;
  readonly body: string;
}

/** URL path → file served by the stand-in. */
export type Assets = ReadonlyMap<string, Asset>;

const JS = "text/javascript; charset=utf-8";
const JSON_TYPE = "application/json; charset=utf-8";

export async function buildAssets(): Promise<Assets> {
  const [client, tabs, app, html, css] = await Promise.all([
    bundleClient(join(PACKAGE_DIST, CLIENT_BUNDLE_NAME)),
    bundleTabs(`./${CLIENT_BUNDLE_NAME}`, join(PACKAGE_DIST, TABS_BUNDLE_NAME)),
    bundleApp(),
    readFile(join(WEB_DIR, "index.html"), "utf8"),
    readStyles(),
  ]);
  return new Map<string, Asset>([
    ["/", { type: "text/html; charset=utf-8", body: html }],
    ["/styles.css", { type: "text/css; charset=utf-8", body: css }],
    ["/app.js", { type: JS, body: app.js.text }],
    ["/app.js.map", { type: JSON_TYPE, body: app.map.text }],
    [`/${CLIENT_BUNDLE_NAME}`, { type: JS, body: client.js.text }],
    [`/${CLIENT_BUNDLE_NAME}.map`, { type: JSON_TYPE, body: client.map.text }],
    [`/${TABS_BUNDLE_NAME}`, { type: JS, body: tabs.js.text }],
    [`/${TABS_BUNDLE_NAME}.map`, { type: JSON_TYPE, body: tabs.map.text }],
  ]);
}

/** The page's stylesheet is kept in parts by concern (service/web/styles/) and served as one /styles.css, in this order. */
const STYLE_PARTS = ["base.css", "sidebar.css", "chat.css"];

async function readStyles(): Promise<string> {
  const parts = await Promise.all(STYLE_PARTS.map((name) => readFile(join(WEB_DIR, "styles", name), "utf8")));
  return parts.join("\n");
}

/**
 * service/web/app.ts imports the SDK as ../client/index.js and ../client/tabs/index.js
 * (type-checked against them); in the browser those are /gateway-client.js and /gateway-client-tabs.js.
 */
const sdkAsSeparateModule = sdkAsSeparateModules(
  new Map([
    [CLIENT_ENTRY, `./${CLIENT_BUNDLE_NAME}`],
    [TABS_ENTRY, `./${TABS_BUNDLE_NAME}`],
  ]),
);

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
