/** GatewayClient's options, their defaults and checks, resolved once into the settings the client runs with. */
import { DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { realTimers } from "./timers.js";
import type { NetworkWindow, Timers, TokenRequest, WebSocketConstructor } from "./types.js";

export interface GatewayClientOptions {
  /** The gateway's base URL, e.g. `https://chat.example.com` (http(s) or ws(s)). */
  readonly url: string;
  /**
   * The app's current user JWT. Called for every connection attempt and for
   * `session_expiring`; with `forceRefresh: true` when the previous one was
   * refused or is about to expire.
   */
  readonly getToken: (request: TokenRequest) => Promise<string>;
  readonly backoff?: BackoffOptions;
  /** Resume from here (a position the app persisted). Without it, the first connection's `latest_seq` is the baseline. */
  readonly lastSeq?: number;
  readonly epoch?: string;
  /** Default: the global WebSocket. Node 20 has none: pass the `ws` package's. */
  readonly WebSocket?: WebSocketConstructor;
  readonly fetch?: typeof fetch;
  readonly timers?: Timers;
  readonly now?: () => number;
  /** In [0, 1); drives the jitter. */
  readonly random?: () => number;
  /** For online/offline events. Default: the global `window` when there is one; null for none. */
  readonly window?: NetworkWindow | null;
  /** App-level ping: browsers cannot send protocol pings, and idle sockets get cut by intermediaries. Default 25 s. */
  readonly pingIntervalMs?: number;
  /** From opening the socket to `connection_established`. Default 15 s. */
  readonly connectTimeoutMs?: number;
  /** The ticket request, body included. Default 10 s. */
  readonly ticketTimeoutMs?: number;
  /** The gateway's MAX_MESSAGE_BYTES: a bigger chat frame is refused by send() instead of ending the connection with 1009. Default 65536. */
  readonly maxMessageBytes?: number;
  /** Chat messages sent per second (burst: twice this), below the gateway's MAX_FRAMES_PER_SECOND. Default 10. */
  readonly messagesPerSecond?: number;
  /** Events buffered above a hole before the SDK gives up on the connection and reconnects. Default 1000. */
  readonly maxBufferedEvents?: number;
}

type Limits = typeof DEFAULTS;

const DEFAULTS = {
  pingIntervalMs: 25_000,
  connectTimeoutMs: 15_000,
  ticketTimeoutMs: 10_000,
  maxMessageBytes: 65_536,
  messagesPerSecond: 10,
  maxBufferedEvents: 1000,
};

export interface Settings extends Limits {
  readonly getToken: GatewayClientOptions["getToken"];
  readonly WebSocket: WebSocketConstructor;
  readonly fetch: typeof fetch;
  readonly timers: Timers;
  readonly now: () => number;
  readonly random: () => number;
  readonly network: NetworkWindow | undefined;
  readonly backoff: Required<BackoffOptions>;
  readonly ticketUrl: string;
  readonly wsUrl: string;
}

/** The options checked, with their defaults filled in; a TypeError or RangeError names what is wrong. */
export function resolveSettings(options: GatewayClientOptions): Settings {
  if (typeof options.getToken !== "function") throw new TypeError("GatewayClient: options.getToken is required");
  const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WebSocketImpl === undefined) {
    throw new TypeError("GatewayClient: no global WebSocket (Node 20): pass options.WebSocket, e.g. the `ws` package's");
  }
  if (options.lastSeq !== undefined && !(Number.isSafeInteger(options.lastSeq) && options.lastSeq >= 0)) {
    throw new RangeError("GatewayClient: options.lastSeq must be an integer ≥ 0");
  }
  return {
    ...endpoints(options.url),
    getToken: options.getToken,
    WebSocket: WebSocketImpl,
    // Wrapped, not stored bare: a browser's fetch/setTimeout called as a method of another object throws "Illegal invocation".
    fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
    timers: options.timers ?? realTimers,
    now: options.now ?? Date.now,
    random: options.random ?? Math.random,
    network: options.window === null ? undefined : (options.window ?? (globalThis as { window?: NetworkWindow }).window),
    backoff: { ...DEFAULT_BACKOFF, ...definedOnly(options.backoff ?? {}) },
    ...DEFAULTS,
    ...definedOnly(pick(options, Object.keys(DEFAULTS) as (keyof Limits)[])),
  };
}

/** `https://host/prefix` → the ticket endpoint and the WebSocket endpoint under it. */
function endpoints(url: string): { ticketUrl: string; wsUrl: string } {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new TypeError(`GatewayClient: options.url is not a URL: ${url}`);
  }
  const secure = base.protocol === "https:" || base.protocol === "wss:";
  if (!["http:", "https:", "ws:", "wss:"].includes(base.protocol)) throw new TypeError("GatewayClient: options.url must be http(s) or ws(s)");
  const path = base.pathname.endsWith("/") ? base.pathname : `${base.pathname}/`;
  const root = `//${base.host}${path}`;
  return { ticketUrl: `${secure ? "https:" : "http:"}${root}api/v1/auth/websocket_ticket`, wsUrl: `${secure ? "wss:" : "ws:"}${root}ws` };
}

function pick<T extends object, K extends keyof T>(value: T, keys: K[]): Partial<Pick<T, K>> {
  return Object.fromEntries(keys.map((k) => [k, value[k]])) as Partial<Pick<T, K>>;
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
