import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";

/**
 * The paths the internet may reach. Everything else, `/internal/…` (the agent
 * backends' API) in particular, is answered 404 by the load balancer itself
 * and never reaches Cloud Run. (Agent backends call `/internal/` on the
 * run.app URL from inside the VPC.) Liveness and readiness are public as
 * `/health` and `/ready`, never `/healthz` and `/readyz`: Cloud Run's front end
 * answers paths ending in `z` itself with Google's 404
 * (https://cloud.google.com/run/docs/known-issues, "Reserved URL paths": "we recommend
 * avoiding all paths that end in z").
 */
export const PUBLIC_PATHS = ["/api/*", "/ws", "/health", "/ready"] as const;
export const TICKET_PATH = "/api/v1/auth/websocket_ticket";
/** Cloud Armor's lowest-priority rule; every policy must have it. */
export const DEFAULT_RULE_PRIORITY = 2147483647;

export interface LoadBalancerArgs {
  readonly region: string;
  /** The Cloud Run service behind the serverless NEG. */
  readonly cloudRunService: pulumi.Input<string>;
  /** The public host name; a Google-managed certificate is issued for it. */
  readonly domain: string;
  /** Ticket requests per client IP per minute before Cloud Armor answers 429. */
  readonly ticketRateLimitPerMinute: number;
}

/**
 * The only way in from the internet: a global external Application Load
 * Balancer (EXTERNAL_MANAGED) on a static IP, terminating TLS with a
 * Google-managed certificate for the domain, redirecting plain HTTP to HTTPS,
 * routing only the public paths to Cloud Run through a serverless NEG, and
 * answering everything else 404 at the edge. Cloud Armor throttles the ticket
 * endpoint per client IP before requests cost an instance anything.
 *
 * The backend service sets no `timeoutSec`, `sessionAffinity` or
 * `connectionDrainingTimeoutSec`: for a serverless NEG backend the API refuses
 * them (HTTP 400), and the Cloud Run service's own request timeout (3600 s)
 * is what bounds a WebSocket's life.
 * https://cloud.google.com/load-balancing/docs/negs/serverless-neg-concepts#limitations
 * https://cloud.google.com/load-balancing/docs/backend-service#timeout-setting
 */
export class LoadBalancer extends pulumi.ComponentResource {
  readonly address: gcp.compute.GlobalAddress;
  readonly neg: gcp.compute.RegionNetworkEndpointGroup;
  readonly securityPolicy: gcp.compute.SecurityPolicy;
  readonly backendService: gcp.compute.BackendService;
  readonly urlMap: gcp.compute.URLMap;
  readonly certificate: gcp.compute.ManagedSslCertificate;
  readonly httpsProxy: gcp.compute.TargetHttpsProxy;
  readonly httpsForwardingRule: gcp.compute.GlobalForwardingRule;
  readonly redirectUrlMap: gcp.compute.URLMap;
  readonly httpProxy: gcp.compute.TargetHttpProxy;
  readonly httpForwardingRule: gcp.compute.GlobalForwardingRule;
  readonly ipAddress: pulumi.Output<string>;
  readonly url: pulumi.Output<string>;

  constructor(name: string, args: LoadBalancerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("chat-gateway:infra:LoadBalancer", name, {}, opts);
    // Resources with no input from another one here also wait for the component's dependsOn.
    const child = { parent: this, dependsOn: opts?.dependsOn };

    this.address = new gcp.compute.GlobalAddress(
      `${name}-ip`,
      { addressType: "EXTERNAL", ipVersion: "IPV4", description: `Chat gateway: the A record of ${args.domain}` },
      child,
    );
    this.neg = new gcp.compute.RegionNetworkEndpointGroup(
      `${name}-neg`,
      { region: args.region, networkEndpointType: "SERVERLESS", cloudRun: { service: args.cloudRunService } },
      child,
    );
    this.securityPolicy = createArmorPolicy(name, args.ticketRateLimitPerMinute, child);
    this.backendService = createBackendService(name, this.neg, this.securityPolicy, this);
    this.urlMap = createGatewayUrlMap(name, args.domain, this.backendService, this);

    const https = createHttpsFrontend(name, args.domain, this.address, this.urlMap, this, child);
    this.certificate = https.certificate;
    this.httpsProxy = https.proxy;
    this.httpsForwardingRule = https.forwardingRule;

    const http = createHttpRedirect(name, this.address, this, child);
    this.redirectUrlMap = http.urlMap;
    this.httpProxy = http.proxy;
    this.httpForwardingRule = http.forwardingRule;

    this.ipAddress = this.address.address;
    this.url = pulumi.output(`https://${args.domain}`);
    this.registerOutputs({ ipAddress: this.ipAddress, url: this.url });
  }
}

/** Cloud Armor: throttles the ticket endpoint per client IP, denies /internal/, allows the rest. */
function createArmorPolicy(name: string, ticketRateLimitPerMinute: number, opts: pulumi.CustomResourceOptions): gcp.compute.SecurityPolicy {
  return new gcp.compute.SecurityPolicy(
    `${name}-armor`,
    {
      type: "CLOUD_ARMOR",
      description: "Chat gateway: throttles ticket issuance per client IP",
      rules: [
        {
          priority: 1000,
          description: `At most ${ticketRateLimitPerMinute} ticket requests per client IP per minute`,
          // Decoded and lower-cased first: the gateway's router decodes `/%61pi/…` to the ticket
          // endpoint, and a match on the raw path would let that spelling past the throttle.
          match: { expr: { expression: `request.path.urlDecode().lower().matches('${TICKET_PATH}')` } },
          action: "throttle",
          rateLimitOptions: {
            enforceOnKey: "IP",
            rateLimitThreshold: { count: ticketRateLimitPerMinute, intervalSec: 60 },
            conformAction: "allow",
            exceedAction: "deny(429)",
          },
        },
        {
          // Defence in depth: the URL map already sends /internal/ nowhere.
          priority: 1100,
          description: "The internal API is not reachable from the internet",
          match: { expr: { expression: "request.path.lower().urlDecode().contains('/internal/')" } },
          action: "deny(404)",
        },
        {
          priority: DEFAULT_RULE_PRIORITY,
          description: "Default: allow",
          match: { versionedExpr: "SRC_IPS_V1", config: { srcIpRanges: ["*"] } },
          action: "allow",
        },
      ],
    },
    opts,
  );
}

/** The serverless NEG behind Cloud Armor. No timeoutSec, sessionAffinity or connectionDrainingTimeoutSec: see LoadBalancer. */
function createBackendService(
  name: string,
  neg: gcp.compute.RegionNetworkEndpointGroup,
  securityPolicy: gcp.compute.SecurityPolicy,
  parent: pulumi.Resource,
): gcp.compute.BackendService {
  return new gcp.compute.BackendService(
    `${name}-backend`,
    {
      loadBalancingScheme: "EXTERNAL_MANAGED",
      protocol: "HTTPS",
      backends: [{ group: neg.id }],
      securityPolicy: securityPolicy.selfLink,
      logConfig: { enable: true, sampleRate: 1 },
      description: "Chat gateway on Cloud Run (serverless NEG)",
    },
    { parent },
  );
}

/** Routes the public paths of the domain to the gateway; everything else is answered 404 at the edge. */
function createGatewayUrlMap(name: string, domain: string, backendService: gcp.compute.BackendService, parent: pulumi.Resource): gcp.compute.URLMap {
  // Unlisted paths get a 404 from the load balancer itself (an abort on every
  // request of the default route), so they never reach Cloud Run.
  const notFound = {
    weightedBackendServices: [{ backendService: backendService.id, weight: 100 }],
    faultInjectionPolicy: { abort: { httpStatus: 404, percentage: 100 } },
  };
  return new gcp.compute.URLMap(
    `${name}-urlmap`,
    {
      description: `Routes ${PUBLIC_PATHS.join(", ")} to the gateway; everything else is 404`,
      defaultRouteAction: notFound,
      hostRules: [{ hosts: [domain], pathMatcher: "gateway" }],
      pathMatchers: [
        {
          name: "gateway",
          defaultRouteAction: notFound,
          pathRules: [{ paths: [...PUBLIC_PATHS], service: backendService.id }],
        },
      ],
    },
    { parent },
  );
}

/** Port 443: TLS with a Google-managed certificate for the domain, in front of the gateway's URL map. */
function createHttpsFrontend(
  name: string,
  domain: string,
  address: gcp.compute.GlobalAddress,
  urlMap: gcp.compute.URLMap,
  parent: pulumi.Resource,
  child: pulumi.CustomResourceOptions,
) {
  const certificate = new gcp.compute.ManagedSslCertificate(
    `${name}-cert`,
    // Provisioning starts once the domain's A record points at the address
    // (docs/operations.md#deploying); until then the certificate is PROVISIONING.
    { managed: { domains: [domain] } },
    child,
  );
  const proxy = new gcp.compute.TargetHttpsProxy(`${name}-https-proxy`, { urlMap: urlMap.id, sslCertificates: [certificate.id] }, { parent });
  const forwardingRule = new gcp.compute.GlobalForwardingRule(
    `${name}-https`,
    { loadBalancingScheme: "EXTERNAL_MANAGED", ipAddress: address.address, ipProtocol: "TCP", portRange: "443", target: proxy.id },
    { parent },
  );
  return { certificate, proxy, forwardingRule };
}

/** Port 80: redirects plain HTTP to HTTPS and serves nothing. */
function createHttpRedirect(name: string, address: gcp.compute.GlobalAddress, parent: pulumi.Resource, child: pulumi.CustomResourceOptions) {
  const urlMap = new gcp.compute.URLMap(
    `${name}-http-redirect`,
    {
      description: "Redirects plain HTTP to HTTPS",
      defaultUrlRedirect: { httpsRedirect: true, redirectResponseCode: "MOVED_PERMANENTLY_DEFAULT", stripQuery: false },
    },
    child,
  );
  const proxy = new gcp.compute.TargetHttpProxy(`${name}-http-proxy`, { urlMap: urlMap.id }, { parent });
  const forwardingRule = new gcp.compute.GlobalForwardingRule(
    `${name}-http`,
    { loadBalancingScheme: "EXTERNAL_MANAGED", ipAddress: address.address, ipProtocol: "TCP", portRange: "80", target: proxy.id },
    { parent },
  );
  return { urlMap, proxy, forwardingRule };
}
