import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { closeAction, closeRetries, errorAction, ERRORS, MESSAGES, type ErrorCode } from "../../service/src/errors.js";

// Like Fastify's test/internals/errors.test.js: the one table in the code and
// the contract in docs/protocol.md must say the same thing.
const doc = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
const section = (title: string) => {
  const start = doc.indexOf(title);
  return doc.slice(start, doc.indexOf("\n## ", start + 1));
};

/** Rows of the close-code table in §3: `| 4401 | `A`, `B` | … |`. */
const closeRows = [...section("## 3. WebSocket endpoint").matchAll(/^\| (\d{4}) \| ([^|]+) \|/gm)].map((m) => ({
  code: Number(m[1]),
  reasons: [...m[2]!.matchAll(/`([A-Z_]+)`/g)].map((r) => r[1]!),
}));
/** Rows of the error table in §2: `| 401 | `TOKEN_MISSING` | … |`. */
const httpRows = [...section("## 2. Ticket endpoint").matchAll(/^\| (\d{3}) \| `([A-Z_]+)` \|/gm)].map((m) => ({ status: Number(m[1]), code: m[2]! }));

describe("the error table and docs/protocol.md", () => {
  it("finds the contract's tables", () => {
    expect(closeRows.length).toBe(11);
    expect(httpRows.length).toBe(8);
  });

  it("gives every close reason of the contract the contract's close code", () => {
    for (const row of closeRows) {
      for (const reason of row.reasons) {
        expect(ERRORS, reason).toHaveProperty(reason);
        expect((ERRORS[reason as ErrorCode] as { close?: number }).close, reason).toBe(row.code);
      }
    }
  });

  it("documents every close code the table holds", () => {
    const documented = new Set(closeRows.flatMap((r) => r.reasons));
    for (const [code, spec] of Object.entries(ERRORS)) {
      if ("close" in spec) expect(documented.has(code), `${code} is not in the close table of docs/protocol.md`).toBe(true);
    }
  });

  it("gives every HTTP error of the ticket endpoint the contract's status", () => {
    for (const row of httpRows) expect((ERRORS[row.code as ErrorCode] as { status?: number }).status, row.code).toBe(row.status);
  });

  it("documents every other HTTP error code and non-fatal frame code", () => {
    for (const [code, spec] of Object.entries(ERRORS)) {
      if ("status" in spec || "frame" in spec) expect(doc.includes(`\`${code}\``) || doc.includes(code), code).toBe(true);
    }
  });

  it("sets retry false exactly for 4500-4999, 1003 and 1009", () => {
    for (const row of closeRows) {
      const stop = (row.code >= 4500 && row.code <= 4999) || row.code === 1003 || row.code === 1009;
      expect(closeRetries(row.code), String(row.code)).toBe(!stop);
    }
  });

  it("closes with no code that WebKit reports as 1006 (1012, 1013, 1014), in the table or the contract", () => {
    const closes = Object.values(ERRORS).flatMap((spec) => ("close" in spec ? [spec.close as number] : []));
    for (const code of [1012, 1013, 1014]) {
      expect(closes).not.toContain(code);
      expect(closeRows.map((r) => r.code)).not.toContain(code);
    }
    expect(ERRORS.SERVICE_RESTART.close).toBe(4012);
    expect(ERRORS.CONNECTION_AGE.close).toBe(4012);
    expect(ERRORS.TICKET_STORE_UNAVAILABLE.close).toBe(4013);
  });

  it("takes a client's action from the error frame's code: at once after a restart, backoff when the store is down, stop when revoked", () => {
    expect(errorAction("SERVICE_RESTART")).toBe("reconnect_now");
    expect(errorAction("CONNECTION_AGE")).toBe("reconnect_now");
    expect(errorAction("TICKET_STORE_UNAVAILABLE")).toBe("reconnect");
    expect(errorAction("SESSION_EXPIRED")).toBe("refresh_token");
    expect(errorAction("SESSION_REVOKED")).toBe("stop");
    expect(errorAction("MESSAGE_TOO_BIG")).toBe("stop");
    expect(errorAction("MESSAGE_MALFORMED")).toBeUndefined(); // closes nothing
  });

  it("tells a client to reconnect at once on 4012, with backoff on anything it did not say itself, and to refresh its token on 4408", () => {
    expect(closeAction(4012)).toBe("reconnect_now");
    // Revision 2 never closes with 1012: a 1012 comes from something else (a proxy), so the client backs off.
    expect(closeAction(1012)).toBe("reconnect");
    expect(closeAction(4013)).toBe("reconnect");
    expect(closeAction(4408)).toBe("refresh_token");
    expect(closeAction(4401)).toBe("reconnect");
    expect(closeAction(1006)).toBe("reconnect");
    expect(closeAction(4501)).toBe("stop");
  });

  it("has a message for a person on every code", () => {
    for (const code of Object.keys(ERRORS) as ErrorCode[]) expect(MESSAGES[code].length, code).toBeGreaterThan(10);
  });
});
