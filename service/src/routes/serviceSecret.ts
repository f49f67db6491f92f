import { createHash, timingSafeEqual } from "node:crypto";

/**
 * The internal API's bearer check (docs/protocol.md §5): the presented
 * secret against the current one and, during a rotation, the previous one,
 * always both (docs/operations.md, "Rotate the service secret").
 *
 * Each comparison is constant-time over SHA-256 digests, so neither the
 * content nor the length of a secret shows in the time taken. Hashing every
 * request cost more than the rest of the check, so the digests of the last
 * few accepted header values are kept: a value that matches one of them (a
 * constant-time comparison, against every entry) reuses its digest. A value
 * that matches none is hashed, as before. The only thing the cache lets a
 * timer learn is whether a presented value has the length of a cached one,
 * which is the length of a secret, and a secret's strength is not in its
 * length.
 */
const CACHED_VALUES = 2;

interface Cached {
  readonly value: Buffer;
  readonly digest: Buffer;
}

export function createSecretCheck(secrets: readonly string[]): (presented: string) => boolean {
  const accepted = secrets.map(digest);
  // Newest first; only values that were accepted get in, so strangers cannot evict the callers'.
  let cache: Cached[] = [];

  return (presented) => {
    const value = Buffer.from(presented);
    let known: Buffer | undefined;
    for (const entry of cache) {
      if (entry.value.length === value.length && timingSafeEqual(entry.value, value)) known = entry.digest;
    }
    const presentedDigest = known ?? digest(presented);
    let ok = false;
    for (const expected of accepted) ok = timingSafeEqual(presentedDigest, expected) || ok;
    if (ok && known === undefined) cache = [{ value, digest: presentedDigest }, ...cache].slice(0, CACHED_VALUES);
    return ok;
  };
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}
