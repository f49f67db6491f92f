import { describe, expect, it } from "vitest";
import { ConfigError } from "../../service/src/config.js";
import { formatStartupFailure } from "../../service/src/startupFailure.js";

const text = new ConfigError(["JWT_SECRET_KEY is required", "PORT must be an integer"]).message;

describe("a startup failure, as npm start reports it", () => {
  it("is one JSON line for a log collector (stderr not a terminal)", () => {
    const out = formatStartupFailure(text, { tty: false, production: false });
    expect(out.split("\n").filter(Boolean)).toHaveLength(1);
    expect(JSON.parse(out)).toEqual({ severity: "CRITICAL", event: "startup_failed", message: text });
  });

  it("is readable lines at a terminal: no escaped \\n, one problem per line", () => {
    const out = formatStartupFailure(text, { tty: true, production: false });
    expect(out).not.toContain("\\n");
    expect(out.split("\n")).toEqual([
      "chat-gateway did not start.",
      "Invalid configuration (2 problems):",
      "  - JWT_SECRET_KEY is required",
      "  - PORT must be an integer",
      "",
    ]);
  });

  it("keeps the JSON line in production, even at a terminal, and adds the readable lines", () => {
    const [json, ...rest] = formatStartupFailure(text, { tty: true, production: true }).split("\n");
    expect(JSON.parse(json!).event).toBe("startup_failed");
    expect(rest[0]).toBe("chat-gateway did not start.");
  });
});
