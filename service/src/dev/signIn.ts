/**
 * The development sign-in stand-in: a small server of its own that plays the
 * app and its auth service for `npm run dev` and the browser tests. It serves
 * the demo page and the SDK bundle, tells the page where the gateway is, and
 * mints ordinary HS256 user tokens with the dev key.
 *
 * It is NOT part of the gateway: service/src/app.ts never imports it, and the
 * gateway verifies the tokens it mints exactly as it verifies any other (the
 * same key is simply configured on both sides, as with a real auth service).
 * It signs a token for any user id, so it listens on loopback only.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { SignJWT } from "jose";
import { buildAssets, type Assets } from "./assets.js";

export interface DevSignInOptions {
  /** Where the page's SDK connects, e.g. http://localhost:8080. */
  readonly gatewayUrl: string;
  /** The HS256 key the gateway is configured with (JWT_SECRET_KEY). */
  readonly jwtKey: string;
  /** Default 0: any free port. */
  readonly port?: number;
  /** Default localhost: never expose a token mint beyond this machine. */
  readonly host?: string;
  readonly tokenTtlSeconds?: number;
  /** Prebuilt assets (several stand-ins can share one build); default: built now. */
  readonly assets?: Assets;
  readonly logger?: FastifyBaseLogger;
}

export interface DevSignIn {
  readonly app: FastifyInstance;
  /** The page's origin, e.g. http://localhost:3000. */
  readonly url: string;
  close(): Promise<void>;
}

const USER_ID = "^[A-Za-z0-9._@+-]{1,64}$";

export async function startDevSignIn(options: DevSignInOptions): Promise<DevSignIn> {
  const assets = options.assets ?? (await buildAssets());
  const key = new TextEncoder().encode(options.jwtKey);
  const ttl = options.tokenTtlSeconds ?? 3600;
  const gateway = new URL(options.gatewayUrl);
  const gatewayOrigins = `${gateway.origin} ${gateway.protocol === "https:" ? "wss:" : "ws:"}//${gateway.host}`;
  // The page loads nothing but its own files and talks to nothing but the gateway.
  const csp = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    `connect-src 'self' ${gatewayOrigins}`,
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");

  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true }),
    // Browsers keep (and pre-open) connections; closing the dev server must not wait for them to time out.
    forceCloseConnections: true,
  });

  app.addHook("onSend", async (_request, reply) => {
    reply.header("cache-control", "no-store").header("x-content-type-options", "nosniff").header("referrer-policy", "no-referrer");
  });

  for (const [path, asset] of assets) {
    app.get(path, async (_request, reply) => {
      if (asset.type.startsWith("text/html")) reply.header("content-security-policy", csp);
      return reply.type(asset.type).send(asset.body);
    });
  }

  app.get("/config.json", async () => ({ gatewayUrl: gateway.origin + gateway.pathname.replace(/\/$/, "") }));

  app.post<{ Body: { user_id: string } }>(
    "/dev/sign-in",
    {
      bodyLimit: 1024,
      schema: {
        body: {
          type: "object",
          required: ["user_id"],
          additionalProperties: false,
          properties: { user_id: { type: "string", pattern: USER_ID } },
        },
      },
    },
    async (request) => {
      const userId = request.body.user_id;
      const exp = Math.floor(Date.now() / 1000) + ttl;
      const token = await new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(userId).setIssuedAt().setExpirationTime(exp).sign(key);
      request.log.info({ event: "dev_sign_in", user_id: userId }, "dev token minted");
      return { user_id: userId, token, expires_at: new Date(exp * 1000).toISOString() };
    },
  );

  const host = options.host ?? "localhost";
  await app.listen({ port: options.port ?? 0, host });
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return { app, url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`, close: () => app.close() };
}
