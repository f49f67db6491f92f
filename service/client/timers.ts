/** Named one-shot timers over the injectable `Timers` (tests drive time; a name holds one timer at most). */
import type { Timers } from "./types.js";

export const realTimers: Timers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export class TimerSet<Name extends string> {
  readonly #handles = new Map<Name, unknown>();

  readonly #timers: Timers;

  constructor(timers: Timers) {
    this.#timers = timers;
  }

  set(name: Name, ms: number, callback: () => void): void {
    this.clear(name);
    this.#handles.set(
      name,
      this.#timers.setTimeout(() => {
        this.#handles.delete(name);
        callback();
      }, ms),
    );
  }

  has(name: Name): boolean {
    return this.#handles.has(name);
  }

  clear(name: Name): void {
    if (!this.#handles.has(name)) return;
    this.#timers.clearTimeout(this.#handles.get(name));
    this.#handles.delete(name);
  }

  clearAll(): void {
    for (const name of [...this.#handles.keys()]) this.clear(name);
  }
}
