// The demo page's scenarios (scenarios.ts) in webkit.
import { defineScenarios } from "./scenarios.js";

defineScenarios("webkit");
