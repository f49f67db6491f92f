import { waitForQuiet } from "./procs.js";
import { fmt, median } from "./stats.js";

let quietWaitMs = 5000;
/** How long a round may wait for the shared machine to calm down before it starts (0: never wait). */
export function setQuietWait(ms: number): void {
  quietWaitMs = ms;
}

/**
 * Runs every variant once per round, alternating the order from round to
 * round (A B, B A, A B …) so a drift in the shared machine's speed does not
 * always favour the same side. Returns the per-round results per variant.
 */
export async function alternate<K extends string, R>(rounds: number, variants: readonly K[], run: (variant: K, round: number) => Promise<R>): Promise<Record<K, R[]>> {
  const out = Object.fromEntries(variants.map((v) => [v, [] as R[]])) as Record<K, R[]>;
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const variant of order) {
      if (quietWaitMs > 0) await waitForQuiet(quietWaitMs);
      out[variant].push(await run(variant, round));
    }
  }
  return out;
}

/** "median (min–max)" of a per-round figure. */
export function spread(values: readonly number[], digits = 2): string {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return "n/a";
  if (finite.length === 1) return fmt(finite[0]!, digits);
  return `${fmt(median(finite), digits)} (${fmt(Math.min(...finite), digits)}–${fmt(Math.max(...finite), digits)})`;
}

/** Median of per-round ratios a[i] / b[i]: paired rounds cancel slow drifts. */
export function pairedRatio(a: readonly number[], b: readonly number[]): number {
  return median(a.map((x, i) => x / b[i]!));
}
