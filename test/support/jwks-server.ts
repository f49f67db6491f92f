import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";

/**
 * A local stand-in for the auth service's JWKS endpoint, which a test or a
 * drill can take away: "reset" destroys each connection (the endpoint is
 * gone), "500" answers an error, "up" serves `keys`. `hits` counts every
 * request that reached it, so a test can see how often the gateway fetched.
 */
export type JwksMode = "up" | "reset" | "500";

export class JwksServer {
  mode: JwksMode = "up";
  hits = 0;
  keys: JWK[] = [];
  private server: Server | undefined;
  private address = "";

  get url(): string {
    return `${this.address}/.well-known/jwks.json`;
  }

  /** `tls`: serve https with this PEM certificate and key (as production requires of AUTH_JWKS_URL). */
  async start(port = 0, tls?: { cert: string; key: string }): Promise<void> {
    const handle = (req: IncomingMessage, res: ServerResponse) => {
      this.hits++;
      if (this.mode === "reset") return void req.socket.destroy();
      if (this.mode === "500") return void res.writeHead(500).end();
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=600" }).end(JSON.stringify({ keys: this.keys }));
    };
    const server: Server = tls ? createTlsServer(tls, handle) : createServer(handle);
    this.server = server;
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()));
    this.address = `${tls ? "https" : "http"}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

/** An ES256 key pair as the auth service would hold it, with its public JWK. */
export async function signingKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  return { privateKey, kid, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

/** A user token signed by `key`, valid for `expiresInSeconds`. */
export function signWith(key: SigningKey, sub = "user-1", expiresInSeconds = 3600): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "ES256", kid: key.kid })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + expiresInSeconds)
    .sign(key.privateKey);
}
