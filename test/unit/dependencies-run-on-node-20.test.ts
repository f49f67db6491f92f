import { readFileSync } from "node:fs";
import Fastify from "fastify";
import { describe, expect, it } from "vitest";

// package.json promises Node 20.11+. cookie@2 (light-my-request's, behind
// fastify.inject) declares node >=22 and made `npm ci` warn EBADENGINE;
// package.json overrides it with cookie@1.1.0, which has the same API.
const lock = JSON.parse(readFileSync(new URL("../../package-lock.json", import.meta.url), "utf8")) as {
  packages: Record<string, { version?: string; engines?: { node?: string } | string[] }>;
};

describe("the dependencies run on Node 20", () => {
  it("no installed package demands a Node newer than 20 (no EBADENGINE at npm ci)", () => {
    const tooNew = Object.entries(lock.packages).flatMap(([path, pkg]) => {
      const node = Array.isArray(pkg.engines) ? undefined : pkg.engines?.node;
      const floor = node === undefined ? undefined : /^>=?\s*v?(\d+)/.exec(node.trim());
      return floor && Number(floor[1]) > 20 ? [`${path}@${pkg.version}: node ${node}`] : [];
    });
    expect(tooNew).toEqual([]);
  });

  it("fastify.inject still sends cookies with the overridden cookie package", async () => {
    const app = Fastify();
    app.get("/", async (request) => ({ cookie: request.headers.cookie }));
    const response = await app.inject({ method: "GET", url: "/", cookies: { a: "1", b: "two words" } });
    expect(response.json()).toEqual({ cookie: "a=1; b=two%20words" });
    await app.close();
  });
});
