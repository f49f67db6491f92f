/**
 * The SDK's public entry (bundled to dist/client/gateway-client.js).
 */
export { GatewayClient, type GatewayClientOptions, type SendOptions } from "./GatewayClient.js";
export { describe as describeCode } from "./reasons.js";
export { DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export type * from "./types.js";
