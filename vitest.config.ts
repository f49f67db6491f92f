import { defineConfig } from "vitest/config";

// One project per kind of test, so `npm test` (unit, integration, infra) and
// `npm run test:e2e` (Chromium, Firefox, WebKit; one file each, one at a time) can be run apart.
export default defineConfig({
  test: {
    projects: [
      { test: { name: "unit", include: ["test/unit/**/*.test.ts"], environment: "node" } },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
      // Pulumi mocks are process-global: one file per fork, never in parallel threads.
      { test: { name: "infra", include: ["test/infra/**/*.test.ts"], environment: "node", pool: "forks", testTimeout: 60_000 } },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
