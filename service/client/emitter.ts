/** The app's listeners of a GatewayClient or SharedGatewayClient, each isolated from the others' errors. */
import type { GatewayClientEvents } from "./types.js";

export type Listener<K extends keyof GatewayClientEvents> = (event: GatewayClientEvents[K]) => void;

export class Emitter {
  readonly #listeners = new Map<keyof GatewayClientEvents, Set<(event: never) => void>>();

  on<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener as (event: never) => void);
    return () => this.off(type, listener);
  }

  off<K extends keyof GatewayClientEvents>(type: K, listener: Listener<K>): void {
    this.#listeners.get(type)?.delete(listener as (event: never) => void);
  }

  emit<K extends keyof GatewayClientEvents>(type: K, event: GatewayClientEvents[K]): void {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        (listener as Listener<K>)(event);
      } catch (err) {
        // An app bug must not break the client's bookkeeping; reported like an event listener's error.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
