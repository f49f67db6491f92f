import { describe, expect, it } from "vitest";
import { ERRORS, GatewayError, socketCloseCode, socketErrorCode, type ErrorCode } from "../../service/src/errors.js";
import { errorFrame } from "../../service/src/realtime/frames.js";
import { storeCall } from "../../service/src/plugins/store/storeCall.js";
import { StoreUnavailableError } from "../../service/src/plugins/store/types.js";

// The one rule that turns an error into the code and close a socket ends with.
describe("error to close", () => {
  it("closes with the code's own close code, and 1011 for a code that closes nothing", () => {
    expect(socketCloseCode("SESSION_REVOKED")).toBe(4501);
    expect(socketCloseCode("TICKET_STORE_UNAVAILABLE")).toBe(4013);
    expect(socketCloseCode("MESSAGE_TOO_BIG")).toBe(1009);
    expect(socketCloseCode("AUTH_UNAVAILABLE")).toBe(1011);
    expect(socketCloseCode("TOKEN_INVALID")).toBe(1011);
  });

  it("keeps a GatewayError's code when it closes sockets, else says INTERNAL_ERROR", () => {
    expect(socketErrorCode(new GatewayError("TICKET_USED"))).toBe("TICKET_USED");
    expect(socketErrorCode(new GatewayError("RATE_LIMITED"))).toBe("RATE_LIMITED");
    // Codes without a close (HTTP-only or non-fatal frames) must not end a socket under their own name.
    expect(socketErrorCode(new GatewayError("AUTH_UNAVAILABLE"))).toBe("INTERNAL_ERROR");
    expect(socketErrorCode(new GatewayError("MESSAGE_INVALID"))).toBe("INTERNAL_ERROR");
    expect(socketErrorCode(new Error("boom"))).toBe("INTERNAL_ERROR");
    expect(socketErrorCode({ code: "TICKET_USED" })).toBe("INTERNAL_ERROR");
    expect(socketErrorCode(undefined)).toBe("INTERNAL_ERROR");
  });

  it("gives a fatal error frame the retry of the close that follows it, for every code", () => {
    for (const code of Object.keys(ERRORS) as ErrorCode[]) {
      const frame = JSON.parse(errorFrame(code, { fatal: true })) as { retry: boolean };
      const close = socketCloseCode(code);
      const stops = (close >= 4500 && close <= 4999) || close === 1003 || close === 1009;
      expect(frame.retry, code).toBe(!stops);
    }
    expect(JSON.parse(errorFrame("MESSAGE_INVALID", { fatal: false }))).not.toHaveProperty("retry");
  });
});

describe("storeCall", () => {
  it("turns an unreachable store into TICKET_STORE_UNAVAILABLE with a retry after 1 s", async () => {
    const err = await storeCall(() => Promise.reject(new StoreUnavailableError("down"))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe("TICKET_STORE_UNAVAILABLE");
    expect((err as GatewayError).retryAfter).toBe(1);
  });

  it("passes other errors through unchanged, and results as they are", async () => {
    const bug = new TypeError("a bug, not an outage");
    await expect(storeCall(() => Promise.reject(bug))).rejects.toBe(bug);
    await expect(storeCall(() => Promise.resolve(7))).resolves.toBe(7);
  });
});
