import { describe, expect, it } from "vitest";
import { cachedRuns, STACKS, T, TEST_LB_IP, type ProgramRun } from "./harness.js";

const run = cachedRuns();

interface Route {
  service?: string;
  routeAction?: { weightedBackendServices?: { backendService: string }[]; faultInjectionPolicy?: { abort?: { httpStatus?: number; percentage?: number } } };
  urlRedirect?: unknown;
}

/** What a route does with a request: the backend it reaches, or the status the load balancer answers itself. */
function outcome(route: Route | undefined): string {
  const abort = route?.routeAction?.faultInjectionPolicy?.abort;
  if (abort && abort.percentage === 100) return `status ${abort.httpStatus}`;
  return route?.service ?? route?.routeAction?.weightedBackendServices?.[0]?.backendService ?? "nothing";
}

/** Routes a request through the URL map the way the load balancer matches hosts and paths. */
function route(r: ProgramRun, host: string, path: string): string {
  const map = r.ofType(T.urlMap).find((m) => m.name.endsWith("-urlmap"))!;
  const m = map.inputs;
  const hostRule = (m.hostRules ?? []).find((h: { hosts: string[] }) => h.hosts.includes(host) || h.hosts.includes("*"));
  if (!hostRule) return outcome({ routeAction: m.defaultRouteAction, service: m.defaultService });
  const matcher = m.pathMatchers.find((p: { name: string }) => p.name === hostRule.pathMatcher);
  let best: { length: number; rule: { service?: string; routeAction?: Route["routeAction"] } } | undefined;
  for (const rule of matcher.pathRules ?? []) {
    for (const p of rule.paths as string[]) {
      const matches = p.endsWith("/*") ? path.startsWith(p.slice(0, -1)) : path === p;
      if (matches && (!best || p.length > best.length)) best = { length: p.length, rule };
    }
  }
  if (best) return outcome(best.rule);
  return outcome({ routeAction: matcher.defaultRouteAction, service: matcher.defaultService });
}

describe.each(STACKS)("%s stack: load balancer", (stack) => {
  const backendId = async () => `${(await run(stack)).one(T.backend).name}-id`;
  const domain = async () => (await run(stack)).config["chat-gateway:domain"]!;

  it("is a global external Application Load Balancer (EXTERNAL_MANAGED)", async () => {
    const r = await run(stack);
    expect(r.one(T.backend).inputs.loadBalancingScheme).toBe("EXTERNAL_MANAGED");
    for (const rule of r.ofType(T.forwardingRule)) expect(rule.inputs.loadBalancingScheme).toBe("EXTERNAL_MANAGED");
  });

  it("the backend is a serverless NEG for the Cloud Run service, in its region", async () => {
    const r = await run(stack);
    const neg = r.one(T.neg);
    expect(neg.inputs).toMatchObject({ networkEndpointType: "SERVERLESS", region: r.config["chat-gateway:region"], cloudRun: { service: "chat-gateway" } });
    expect(r.one(T.backend).inputs.backends).toEqual([{ group: `${neg.name}-id` }]);
  });

  it("the backend service sets no timeoutSec (serverless NEGs reject it; Cloud Run's 3600 s timeout governs)", async () => {
    expect((await run(stack)).one(T.backend).inputs).not.toHaveProperty("timeoutSec");
  });

  it("the backend service sets no sessionAffinity (serverless NEGs reject it; Cloud Run's own affinity is on)", async () => {
    expect((await run(stack)).one(T.backend).inputs).not.toHaveProperty("sessionAffinity");
  });

  it("the backend service sets no connectionDrainingTimeoutSec (serverless NEGs reject it)", async () => {
    expect((await run(stack)).one(T.backend).inputs).not.toHaveProperty("connectionDrainingTimeoutSec");
  });

  it("the backend service logs every request", async () => {
    expect((await run(stack)).one(T.backend).inputs.logConfig).toEqual({ enable: true, sampleRate: 1 });
  });

  it("the URL map routes /api/*, /ws, /health and /ready to the gateway", async () => {
    const r = await run(stack);
    const host = await domain();
    const backend = await backendId();
    for (const path of ["/api/v1/auth/websocket_ticket", "/api/anything", "/ws", "/health", "/ready"]) {
      expect(route(r, host, path), path).toBe(backend);
    }
  });

  it("the URL map does not route /internal/ from the internet", async () => {
    const r = await run(stack);
    const host = await domain();
    for (const path of ["/internal/v1/users/u1/events", "/internal/v1/users/u1/revoke", "/internal", "/", "/metrics", "/wsx", "/api"]) {
      expect(route(r, host, path), path).toBe("status 404");
    }
    // Requests for another host (e.g. the bare IP) reach nothing either.
    expect(route(r, TEST_LB_IP, "/internal/v1/users/u1/events")).toBe("status 404");
    expect(route(r, TEST_LB_IP, "/ws")).toBe("status 404");
  });

  it("a Google-managed certificate covers the domain, and the HTTPS proxy serves it with the routing URL map", async () => {
    const r = await run(stack);
    const cert = r.one(T.cert);
    expect(cert.inputs.managed).toEqual({ domains: [await domain()] });
    const proxy = r.one(T.httpsProxy);
    expect(proxy.inputs.sslCertificates).toEqual([`${cert.name}-id`]);
    expect(proxy.inputs.urlMap).toBe("chat-gateway-urlmap-id");
  });

  it("HTTPS on 443 and HTTP on 80 share one static IP, and HTTP only redirects to HTTPS", async () => {
    const r = await run(stack);
    const address = r.ofType(T.globalAddress).find((a) => a.name === "chat-gateway-ip")!;
    const rules = r.ofType(T.forwardingRule);
    expect(rules.map((x) => x.inputs.portRange).sort()).toEqual(["443", "80"]);
    for (const rule of rules) expect(rule.inputs.ipAddress).toBe(address.state.address);
    const http = rules.find((x) => x.inputs.portRange === "80")!;
    expect(http.inputs.target).toBe(`${r.one(T.httpProxy).name}-id`);
    expect(rules.find((x) => x.inputs.portRange === "443")!.inputs.target).toBe(`${r.one(T.httpsProxy).name}-id`);
    const redirect = r.ofType(T.urlMap).find((m) => m.name.endsWith("-http-redirect"))!;
    expect(r.one(T.httpProxy).inputs.urlMap).toBe(`${redirect.name}-id`);
    expect(redirect.inputs.defaultUrlRedirect).toMatchObject({ httpsRedirect: true, stripQuery: false });
    expect(redirect.inputs.defaultService).toBeUndefined();
    expect(redirect.inputs.pathMatchers).toBeUndefined();
  });

  it("Cloud Armor throttles ticket requests per client IP, and is attached to the backend service", async () => {
    const r = await run(stack);
    const armor = r.one(T.armor);
    const rule = armor.inputs.rules.find((x: { match: { expr?: { expression: string } } }) =>
      x.match.expr?.expression.includes("matches('/api/v1/auth/websocket_ticket')"),
    );
    expect(["throttle", "rate_based_ban"]).toContain(rule.action);
    expect(rule.rateLimitOptions).toMatchObject({
      enforceOnKey: "IP",
      exceedAction: "deny(429)",
      rateLimitThreshold: { count: Number(r.config["chat-gateway:ticketEdgeRateLimitPerMinute"] ?? 1200), intervalSec: 60 },
    });
    expect(r.one(T.backend).inputs.securityPolicy).toBe(armor.state.selfLink);
  });

  it("Cloud Armor also refuses /internal/ (defence in depth) and keeps the default allow rule", async () => {
    const armor = (await run(stack)).one(T.armor);
    const rules = armor.inputs.rules as { priority: number; action: string; match: { expr?: { expression: string }; versionedExpr?: string } }[];
    expect(rules.find((x) => x.match.expr?.expression.includes("/internal/"))?.action).toBe("deny(404)");
    expect(rules.find((x) => x.priority === 2147483647)).toMatchObject({ action: "allow", match: { versionedExpr: "SRC_IPS_V1" } });
  });

  it("the stack exports the load balancer IP and URL", async () => {
    const r = await run(stack);
    expect(r.outputs.loadBalancerIp).toBe(TEST_LB_IP);
    expect(r.outputs.url).toBe(`https://${await domain()}`);
  });
});

// The throttle's intent: every spelling of a path that the gateway routes to
// the ticket endpoint is throttled. The rule's expression is evaluated the way
// Cloud Armor's rules language reads it (request.path, then urlDecode(),
// lower(), matches(RE2, unanchored)), and the gateway itself says which
// spellings reach the ticket endpoint (401 TOKEN_MISSING without a token).
describe("the ticket throttle matches every spelling the gateway routes to the ticket endpoint", () => {
  const SPELLINGS = [
    "/api/v1/auth/websocket_ticket",
    "/%61pi/v1/auth/websocket_ticket",
    "/%61%70%69/v1/auth/websocket_ticket",
    "/api/v1/auth/%77ebsocket_ticket",
    "/api/v1/auth/websocket_ticket?x=1",
    "/api%2Fv1/auth/websocket_ticket",
    "/API/v1/auth/websocket_ticket",
    "/health",
    "/ws",
  ];

  it("throttles each path the gateway answers as the ticket endpoint", async () => {
    const armor = (await run("staging")).one(T.armor);
    const rule = (armor.inputs.rules as { action: string; match: { expr?: { expression: string } } }[]).find((x) => x.action === "throttle")!;
    const { startGateway } = await import("../support/gateway.js");
    const gw = await startGateway();
    try {
      for (const path of SPELLINGS) {
        const res = await fetch(`${gw.url}${path}`, { method: "POST" });
        const routedToTickets = res.status === 401;
        if (routedToTickets) expect(evaluateArmor(rule.match.expr!.expression, path.split("?")[0]!), path).toBe(true);
      }
      expect(evaluateArmor(rule.match.expr!.expression, "/%61pi/v1/auth/websocket_ticket")).toBe(true);
      expect(evaluateArmor(rule.match.expr!.expression, "/health")).toBe(false);
      expect(evaluateArmor(rule.match.expr!.expression, "/ws")).toBe(false);
    } finally {
      await gw.close();
    }
  });
});

/** `request.path(.urlDecode()|.lower())*.matches('re')` over `path`; any other shape throws, so the test cannot pass by skipping. */
function evaluateArmor(expression: string, path: string): boolean {
  const m = /^request\.path((?:\.(?:urlDecode|lower)\(\))*)\.matches\('([^']*)'\)$/.exec(expression);
  if (!m) throw new Error(`an expression this test cannot evaluate: ${expression}`);
  let value = path;
  for (const fn of m[1]!.split(".").filter(Boolean)) {
    value = fn === "lower()" ? value.toLowerCase() : decodeURIComponent(value);
  }
  return new RegExp(m[2]!).test(value);
}
