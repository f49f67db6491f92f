/**
 * The keys of `npm run dev`, kept across restarts in the git-ignored `.tmp/`:
 * a page left open while the dev server restarts keeps a token the new
 * process still accepts, instead of meeting 401 and a backoff. Development
 * only: the file holds a signing key and a service secret of a dev server on
 * loopback, is written owner-readable only, and is never read by the gateway
 * itself (`npm start` takes its keys from the environment or Secret Manager).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

export interface DevKeys {
  readonly jwtKey: string;
  readonly serviceSecret: string;
}

export const DEFAULT_DEV_KEYS_FILE = fileURLToPath(new URL("../../../.tmp/dev-keys.json", import.meta.url));
/** 32 random bytes, base64url: what this module writes; anything else in the file is replaced. */
const KEY_SHAPE = /^[A-Za-z0-9_-]{43}$/;

export function newDevKeys(): DevKeys {
  return { jwtKey: randomBytes(32).toString("base64url"), serviceSecret: randomBytes(32).toString("base64url") };
}

/** The keys in `file`, or new ones written there when it is missing or not this module's shape. */
export function loadDevKeys(file = DEFAULT_DEV_KEYS_FILE): DevKeys & { readonly created: boolean } {
  try {
    const saved = JSON.parse(readFileSync(file, "utf8")) as Partial<DevKeys>;
    if (KEY_SHAPE.test(saved.jwtKey ?? "") && KEY_SHAPE.test(saved.serviceSecret ?? "")) {
      return { jwtKey: saved.jwtKey!, serviceSecret: saved.serviceSecret!, created: false };
    }
  } catch {
    // missing or unreadable: make new ones
  }
  const keys = newDevKeys();
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600 });
  return { ...keys, created: true };
}
