/**
 * Runs inside the page (through `call`), after it loaded and before the user
 * signs in, so that it sees every ticket request and socket of the SDK. It
 * records what a test checks in every engine alike (WebDriver classic has no
 * network or error events): ticket requests, sockets and how each one closed
 * as the page saw it, and the page's uncaught errors. Self-contained: it is
 * sent to the browser as source text.
 */
export interface PageRecord {
  tickets: number;
  sockets: string[];
  closes: Array<{ code: number; reason: string; wasClean: boolean }>;
  errors: string[];
}

export function instrumentPage(options: { stallFirstTicketSocketMs?: number }): boolean {
  type Win = typeof window & { __e2e?: PageRecord };
  const w = window as Win;
  if (w.__e2e) return false;
  const record: PageRecord = { tickets: 0, sockets: [], closes: [], errors: [] };
  w.__e2e = record;
  w.addEventListener("error", (e) => record.errors.push(String(e.message)));
  w.addEventListener("unhandledrejection", (e) => record.errors.push(`unhandled rejection: ${String(e.reason)}`));

  const realFetch = w.fetch.bind(w);
  w.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    if (url.includes("/api/v1/auth/websocket_ticket")) record.tickets++;
    return realFetch(input, init);
  };

  const Real = w.WebSocket;
  const open = (url: string, protocols?: string | string[]) => {
    const socket = new Real(url, protocols);
    socket.addEventListener("close", (e) => record.closes.push({ code: e.code, reason: e.reason, wasClean: e.wasClean }));
    return socket;
  };
  let stall = options.stallFirstTicketSocketMs;
  // The SDK creates its sockets with `new`: a plain function returning an object works as a constructor.
  const Patched = function (url: string | URL, protocols?: string | string[]) {
    const href = String(url);
    record.sockets.push(href);
    if (stall !== undefined && href.includes("ticket=")) {
      const delay = stall;
      stall = undefined;
      return stalledSocket(href, delay);
    }
    return open(href, protocols);
  };
  Object.assign(Patched, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  w.WebSocket = Patched as unknown as typeof WebSocket;

  /** A socket that opens only `delay` ms after it was asked for (a stalled network, a frozen tab). */
  function stalledSocket(href: string, delay: number): object {
    const facade = {
      readyState: 0,
      onopen: null as ((e: Event) => void) | null,
      onmessage: null as ((e: MessageEvent) => void) | null,
      onclose: null as ((e: CloseEvent) => void) | null,
      onerror: null as ((e: Event) => void) | null,
      real: undefined as WebSocket | undefined,
      abandoned: false,
      send(data: string) {
        facade.real?.send(data);
      },
      close(code?: number, reason?: string) {
        facade.abandoned = true;
        facade.real?.close(code, reason);
      },
    };
    setTimeout(() => {
      if (facade.abandoned) return;
      const s = (facade.real = open(href));
      s.onopen = (e) => ((facade.readyState = 1), facade.onopen?.(e));
      s.onmessage = (e) => facade.onmessage?.(e);
      s.onerror = (e) => facade.onerror?.(e);
      s.onclose = (e) => ((facade.readyState = 3), facade.onclose?.(e));
    }, delay);
    return facade;
  }
  return true;
}

export function pageRecord(): PageRecord {
  return (window as typeof window & { __e2e: PageRecord }).__e2e;
}
