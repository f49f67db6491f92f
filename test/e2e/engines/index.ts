import { launchChromium } from "./chromium.js";
import { launchFirefox } from "./firefox.js";
import { launchWebKit } from "./webkit.js";
import type { EngineBrowser, EngineName } from "./types.js";

export type { EngineBrowser, EngineName, EnginePage, EngineTab } from "./types.js";
export { call } from "./types.js";

export function launchEngine(name: EngineName): Promise<EngineBrowser> {
  switch (name) {
    case "chromium":
      return launchChromium();
    case "firefox":
      return launchFirefox();
    case "webkit":
      return launchWebKit();
  }
}
