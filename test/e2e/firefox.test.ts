// The demo page's scenarios (scenarios.ts) in firefox.
import { defineScenarios } from "./scenarios.js";

defineScenarios("firefox");
