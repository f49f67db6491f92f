// The demo page's scenarios (scenarios.ts) in chromium.
import { defineScenarios } from "./scenarios.js";

defineScenarios("chromium");
