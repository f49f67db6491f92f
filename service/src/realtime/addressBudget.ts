import type { Store } from "../plugins/store/types.js";

/**
 * Redemptions per client address (docs/protocol.md §8.2: more than
 * TICKET_RATE_PER_IP a minute, across instances, is 4429 RATE_LIMITED),
 * counted without a store round trip on the connect path.
 *
 * The address's counter cannot join the admission script: the address is not
 * the user, so its key is in another hash slot. Instead each instance counts
 * locally and refuses at once, in memory, an address whose count (what the
 * store last said for all instances, plus what this instance has counted
 * since) is over the limit. Its local counts go to the store in batches
 * (store.addHits, one command per address per FLUSH_MS, off the connect path),
 * and the store's answer brings in every other instance's count. So one
 * instance enforces the limit exactly, and several enforce it within what
 * they counted in the last FLUSH_MS. An attempt refused here never reaches
 * the store, and its ticket is not spent. A store that cannot be reached
 * counts nothing (as before: the limit is a throttle, not a gate).
 */
export type AddressBudget = ReturnType<typeof createAddressBudget>;

const WINDOW_MS = 60_000;
const FLUSH_MS = 100;

interface Entry {
  /** Counted here and not yet sent to the store. */
  pending: number;
  /** Sent and not yet answered. */
  inFlight: number;
  /** The store's count for the window, as last answered. */
  known: number;
  /** Counted here in the window: the floor of the estimate, whatever the store said. */
  local: number;
  /** When the window ends (the store's, once it answered). */
  resetAt: number;
}

export function createAddressBudget(deps: { store: Store; limit: number; now?: () => number; onStoreError?: () => void }) {
  const now = deps.now ?? Date.now;
  const entries = new Map<string, Entry>();
  let timer: NodeJS.Timeout | undefined;

  function flush(): void {
    timer = undefined;
    const at = now();
    for (const [address, entry] of entries) {
      if (entry.pending === 0) {
        if (entry.inFlight === 0 && entry.resetAt <= at) entries.delete(address);
        continue;
      }
      const hits = entry.pending;
      entry.pending = 0;
      entry.inFlight += hits;
      deps.store.addHits(`redeem:${address}`, hits, WINDOW_MS).then(
        ({ count, resetInMs }) => {
          entry.inFlight -= hits;
          // The store's window is the truth: it also starts the count over when its window ends.
          entry.known = count;
          entry.local = Math.min(entry.local, count + entry.inFlight + entry.pending);
          entry.resetAt = now() + resetInMs;
        },
        () => {
          entry.inFlight -= hits;
          deps.onStoreError?.();
        },
      );
    }
  }

  return {
    /** Counts one redemption attempt from the address; false when the address is over the limit. */
    allow(address: string): boolean {
      const at = now();
      let entry = entries.get(address);
      if (entry === undefined || (entry.resetAt <= at && entry.pending === 0 && entry.inFlight === 0)) {
        entry = { pending: 0, inFlight: 0, known: 0, local: 0, resetAt: at + WINDOW_MS };
        entries.set(address, entry);
      }
      entry.pending++;
      entry.local++;
      timer ??= setTimeout(flush, FLUSH_MS).unref();
      return Math.max(entry.known + entry.inFlight + entry.pending, entry.local) <= deps.limit;
    },

    close(): void {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}
