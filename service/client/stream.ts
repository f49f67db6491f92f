/**
 * The client's view of the user's event stream (docs/protocol.md §4, §8.1):
 * the last seq handed to the app, contiguously, and the epoch of the counter
 * that numbered it.
 *
 * Events arrive in seq order, with one exception the contract names: live
 * events that reach a new connection before the replay of a `resume` are not
 * held back. So an event above a hole is kept here until the hole is filled,
 * and the app is handed every event once and in order. Anything at or below
 * the last delivered seq, or already buffered, is a duplicate and dropped.
 */
export interface Sequenced {
  readonly seq: number;
}

export interface Accepted<E> {
  /** Events the app may have now, in seq order (possibly none). */
  readonly deliver: E[];
  readonly duplicate: boolean;
}

export class EventStream<E extends Sequenced> {
  #last: number | undefined;
  #currentEpoch: string | undefined;
  readonly #buffer = new Map<number, E>();

  constructor(lastSeq?: number, epoch?: string) {
    this.#last = lastSeq;
    this.#currentEpoch = epoch;
  }

  /** The last seq delivered to the app; undefined before any baseline. */
  get lastSeq(): number | undefined {
    return this.#last;
  }

  get epoch(): string | undefined {
    return this.#currentEpoch;
  }

  /** True when the client has a position to resume from. */
  get hasState(): boolean {
    return this.#last !== undefined;
  }

  /** True while events are buffered above a hole. */
  get holeOpen(): boolean {
    return this.#buffer.size > 0;
  }

  get buffered(): number {
    return this.#buffer.size;
  }

  /** Starts over at `latestSeq` (first connection, or after resync_required): what was buffered is of the old view. */
  baseline(latestSeq: number, epoch: string | undefined): void {
    this.#last = latestSeq;
    this.#currentEpoch = epoch;
    this.#buffer.clear();
  }

  /** Names the epoch of a position the app handed in without one, once a resume confirmed it. */
  adoptEpoch(epoch: string): void {
    this.#currentEpoch ??= epoch;
  }

  /** Takes an event; before a baseline (or a position to resume from) there is nothing to order it against, and it is dropped. */
  accept(event: E): Accepted<E> {
    if (this.#last === undefined) return { deliver: [], duplicate: false };
    if (event.seq <= this.#last || this.#buffer.has(event.seq)) return { deliver: [], duplicate: true };
    if (event.seq !== this.#last + 1) {
      this.#buffer.set(event.seq, event);
      return { deliver: [], duplicate: false };
    }
    const deliver = [event];
    this.#last = event.seq;
    for (let next = this.#buffer.get(this.#last + 1); next !== undefined; next = this.#buffer.get(this.#last + 1)) {
      this.#buffer.delete(next.seq);
      deliver.push(next);
      this.#last = next.seq;
    }
    return { deliver, duplicate: false };
  }
}
