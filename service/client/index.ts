/**
 * The SDK's public entry: `@chat-gateway/client` (bundled to dist/index.js).
 * Sharing one socket between tabs is the second entry, `@chat-gateway/client/tabs`.
 */
/** The revision of docs/protocol.md this SDK speaks (also the major of the package's version). */
export const PROTOCOL_REVISION = 2;
export { GatewayClient, type GatewayClientOptions, type SendOptions } from "./GatewayClient.js";
export { describe as describeCode } from "./reasons.js";
export { DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export type * from "./types.js";
