/**
 * The SDK's size budget, checked on every `npm test`: the default entry
 * (GatewayClient) is at most 7 KiB gzipped. Sharing tabs is a separate entry
 * that imports the first rather than copying it, so apps that do not share
 * pay nothing for it.
 */
import { describe, expect, it } from "vitest";
import { bundleClient, bundleTabs, gzipSize } from "../../service/client/build.js";

const BUDGET_BYTES = 7 * 1024;

describe("the SDK's size", () => {
  it(`the default entry is at most ${BUDGET_BYTES / 1024} KiB gzipped`, async () => {
    const { js } = await bundleClient();
    const size = gzipSize(js.text);
    expect(size, `dist/index.js is ${(size / 1024).toFixed(2)} KiB gzipped`).toBeLessThanOrEqual(BUDGET_BYTES);
    // The budget counts the real client, not an empty bundle.
    expect(js.text).toContain("websocket_ticket");
    expect(js.text).not.toContain("BroadcastChannel");
  });

  it("the tabs entry imports GatewayClient from the default entry instead of bundling a copy", async () => {
    const { js } = await bundleTabs("./index.js");
    expect(js.text).toMatch(/^import\s*\{[^}]*GatewayClient[^}]*\}\s*from\s*"\.\/index\.js"/);
    expect(js.text).not.toContain("websocket_ticket");
    expect(gzipSize(js.text)).toBeLessThanOrEqual(BUDGET_BYTES);
  });
});
