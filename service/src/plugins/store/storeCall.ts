import { GatewayError } from "../../errors.js";
import { StoreUnavailableError } from "./types.js";

/**
 * Runs a store call, turning an unreachable store into 503 / 4013
 * TICKET_STORE_UNAVAILABLE (with Retry-After: 1); any other error passes
 * through unchanged, so a bug is not mistaken for an outage.
 */
export async function storeCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof StoreUnavailableError) throw new GatewayError("TICKET_STORE_UNAVAILABLE", { retryAfter: 1, cause: err });
    throw err;
  }
}
