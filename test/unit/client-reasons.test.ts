import { describe, expect, it } from "vitest";
import { ERRORS, MESSAGES, closeAction, type ErrorCode } from "../../service/src/errors.js";
import { describe as reasonFor } from "../../service/client/reasons.js";

const closing = (Object.keys(ERRORS) as ErrorCode[]).filter((code) => (ERRORS[code] as { close?: number }).close !== undefined);

describe("human reasons", () => {
  it("every code that closes a socket has a reason written for a person, not the developer message", () => {
    for (const code of closing) {
      const reason = reasonFor(code);
      expect(reason, code).not.toBe(MESSAGES[code]);
      expect(reason.length, code).toBeLessThan(60); // fits a status line
    }
  });

  it("says 'retrying' exactly when the client retries, and never for a stop", () => {
    for (const code of closing) {
      const retries = closeAction((ERRORS[code] as { close: number }).close) !== "stop";
      expect(/…$/.test(reasonFor(code)), `${code}: "${reasonFor(code)}"`).toBe(retries);
    }
  });

  it("names the cases the product asked for", () => {
    expect(reasonFor("TICKET_EXPIRED")).toBe("ticket expired, renewing…");
    expect(reasonFor("SESSION_REVOKED")).toBe("signed out: session revoked");
    expect(reasonFor("ORIGIN_FORBIDDEN")).toBe("origin not allowed");
  });

  it("falls back to the message the gateway sent, then to a generic word, for codes it has no words of its own for", () => {
    expect(reasonFor("BODY_TOO_LARGE", MESSAGES.BODY_TOO_LARGE)).toBe(MESSAGES.BODY_TOO_LARGE);
    expect(reasonFor("SOMETHING_NEW", "disconnected")).toBe("disconnected");
  });
});
