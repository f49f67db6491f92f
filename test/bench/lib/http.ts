/**
 * A minimal HTTP/1.1 keep-alive client on raw sockets, for load generation.
 *
 * Why not fetch/undici: on a 2-core machine the load generator shares a core
 * with redis-server, and it must be much cheaper per request than the server
 * it measures, or it measures itself (autocannon is built the same way).
 * It understands exactly what the servers here send: a status line, headers,
 * and a Content-Length or chunked body.
 */
import { connect, type Socket } from "node:net";

export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

export interface HttpRequest {
  readonly method: string;
  readonly path: string;
  /** Lower-case names; host and content-length are added. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Buffer;
}

const EMPTY = Buffer.alloc(0);
const CRLFCRLF = Buffer.from("\r\n\r\n");

export function renderRequest(host: string, request: HttpRequest): Buffer {
  const body = request.body === undefined ? EMPTY : Buffer.isBuffer(request.body) ? request.body : Buffer.from(request.body);
  let head = `${request.method} ${request.path} HTTP/1.1\r\nhost: ${host}\r\n`;
  for (const [name, value] of Object.entries(request.headers ?? {})) head += `${name}: ${value}\r\n`;
  if (body.length > 0 || request.method === "POST" || request.method === "PUT") head += `content-length: ${body.length}\r\n`;
  head += "\r\n";
  return body.length === 0 ? Buffer.from(head) : Buffer.concat([Buffer.from(head), body]);
}

type Parsed = { status: number; headers: Record<string, string>; body: string; used: number; close: boolean } | undefined;

const CONTENT_LENGTH = Buffer.from("\r\ncontent-length:");
const CHUNKED = Buffer.from("chunked");
const CONNECTION_CLOSE = Buffer.from("\r\nconnection: close");

function headersOf(buf: Buffer, end: number): Record<string, string> {
  const headers: Record<string, string> = {};
  const lines = buf.toString("latin1", 0, end).split("\r\n");
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}

/**
 * Parses one complete response from the start of `buf`, or returns undefined
 * when more bytes are needed. The fast path (lower-case content-length, as
 * Node and Fastify send it) reads no header but that one.
 */
export function parseResponse(buf: Buffer, noBody = false): Parsed {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) return undefined;
  const status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48);
  const start = end + 4;
  // A response to HEAD, and 1xx/204/304, have no body whatever the headers say.
  if (noBody || status === 204 || status === 304 || (status >= 100 && status < 200)) {
    const headers = headersOf(buf, end);
    return { status, headers, body: "", used: start, close: headers.connection === "close" };
  }
  const cl = buf.indexOf(CONTENT_LENGTH);
  if (cl >= 0 && cl < end) {
    let at = cl + CONTENT_LENGTH.length;
    while (buf[at] === 32) at++;
    let length = 0;
    while (buf[at]! >= 48 && buf[at]! <= 57) length = length * 10 + (buf[at++]! - 48);
    if (buf.length < start + length) return undefined;
    const closeAt = buf.indexOf(CONNECTION_CLOSE);
    const close = closeAt >= 0 && closeAt < end;
    return { status, headers: lazyHeaders(buf, end), body: length === 0 ? "" : buf.toString("utf8", start, start + length), used: start + length, close };
  }
  const headers = headersOf(buf, end);
  const chunkedAt = buf.indexOf(CHUNKED);
  if (chunkedAt >= 0 && chunkedAt < end) {
    const chunks: Buffer[] = [];
    let at = start;
    for (;;) {
      const lineEnd = buf.indexOf("\r\n", at);
      if (lineEnd < 0) return undefined;
      const size = parseInt(buf.toString("latin1", at, lineEnd), 16);
      if (!Number.isFinite(size)) throw new Error("bad chunk size");
      if (buf.length < lineEnd + 2 + size + 2) return undefined;
      if (size === 0) return { status, headers, body: Buffer.concat(chunks).toString("utf8"), used: lineEnd + 4, close: headers.connection === "close" };
      chunks.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  // Content-Length written in another case than Node's usual lower case.
  const length = headers["content-length"] === undefined ? 0 : Number(headers["content-length"]);
  if (buf.length < start + length) return undefined;
  return { status, headers, body: buf.toString("utf8", start, start + length), used: start + length, close: headers.connection === "close" };
}

/** Headers parsed only if someone reads them (the load loops never do). */
function lazyHeaders(buf: Buffer, end: number): Record<string, string> {
  const head = Buffer.from(buf.subarray(0, end));
  let parsed: Record<string, string> | undefined;
  return new Proxy({} as Record<string, string>, {
    get: (_t, name: string) => (parsed ??= headersOf(head, end))[name],
    ownKeys: () => Reflect.ownKeys((parsed ??= headersOf(head, end))),
    getOwnPropertyDescriptor: (_t, name: string) => ({ value: (parsed ??= headersOf(head, end))[name], enumerable: true, configurable: true }),
    has: (_t, name: string) => name in (parsed ??= headersOf(head, end)),
  });
}

/** One keep-alive connection, one request at a time; reconnects on the next request after a close. */
export class HttpConn {
  private socket: Socket | undefined;
  private buf: Buffer = EMPTY;
  private waiter: { resolve: (r: HttpResponse) => void; reject: (e: Error) => void } | undefined;
  private readonly hostHeader: string;
  private sentAt = 0;
  private expectNoBody = false;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly timeoutMs = 30_000,
  ) {
    this.hostHeader = `${host}:${port}`;
  }

  get busy(): boolean {
    return this.waiter !== undefined;
  }

  private open(): Socket {
    const socket = connect({ host: this.host, port: this.port, noDelay: true });
    // An idle timeout re-armed on every read and write costs more than the
    // request; a coarse watchdog below catches a request that never ends.
    socket.on("data", (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      let parsed: Parsed;
      try {
        parsed = parseResponse(this.buf, this.expectNoBody);
      } catch (err) {
        this.fail(err as Error);
        socket.destroy();
        return;
      }
      if (parsed === undefined) return;
      this.buf = this.buf.length === parsed.used ? EMPTY : this.buf.subarray(parsed.used);
      const waiter = this.waiter;
      this.waiter = undefined;
      if (parsed.close) {
        socket.destroy();
        if (this.socket === socket) this.socket = undefined;
      }
      waiter?.resolve({ status: parsed.status, headers: parsed.headers, body: parsed.body });
    });
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => {
      if (this.socket === socket) this.socket = undefined;
      this.fail(new Error("connection closed"));
    });
    return socket;
  }

  private fail(err: Error): void {
    this.buf = EMPTY;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(err);
  }

  /** Sends a pre-rendered request (see renderRequest). */
  sendRaw(bytes: Buffer): Promise<HttpResponse> {
    if (this.waiter) return Promise.reject(new Error("HttpConn is busy"));
    this.expectNoBody = bytes[0] === 0x48 && bytes[1] === 0x45 && bytes[2] === 0x41 && bytes[3] === 0x44; // "HEAD"
    this.socket ??= this.open();
    const socket = this.socket;
    const sentAt = Date.now();
    this.sentAt = sentAt;
    if (this.watchdog === undefined) {
      this.watchdog = setInterval(() => {
        if (this.waiter !== undefined && Date.now() - this.sentAt > this.timeoutMs) {
          this.fail(new Error(`no response within ${this.timeoutMs} ms`));
          this.socket?.destroy();
        }
      }, Math.min(this.timeoutMs, 1000));
      this.watchdog.unref();
    }
    return new Promise<HttpResponse>((resolve, reject) => {
      this.waiter = { resolve, reject };
      socket.write(bytes);
    });
  }

  send(request: HttpRequest): Promise<HttpResponse> {
    return this.sendRaw(renderRequest(this.hostHeader, request));
  }

  close(): void {
    clearInterval(this.watchdog);
    this.watchdog = undefined;
    this.socket?.destroy();
    this.socket = undefined;
  }
}

/** A fixed number of keep-alive connections with a FIFO queue in front. */
export class HttpPool {
  private readonly idle: HttpConn[] = [];
  private readonly all: HttpConn[] = [];
  private readonly queue: Array<{ bytes: Buffer; resolve: (r: HttpResponse) => void; reject: (e: Error) => void }> = [];
  readonly hostHeader: string;

  constructor(host: string, port: number, size: number, timeoutMs = 30_000) {
    this.hostHeader = `${host}:${port}`;
    for (let i = 0; i < size; i++) {
      const conn = new HttpConn(host, port, timeoutMs);
      this.all.push(conn);
      this.idle.push(conn);
    }
  }

  get queued(): number {
    return this.queue.length;
  }

  request(request: HttpRequest): Promise<HttpResponse> {
    return this.requestRaw(renderRequest(this.hostHeader, request));
  }

  requestRaw(bytes: Buffer): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const conn = this.idle.pop()!;
      const job = this.queue.shift()!;
      conn.sendRaw(job.bytes).then(
        (r) => {
          this.idle.push(conn);
          job.resolve(r);
          this.pump();
        },
        (e: Error) => {
          this.idle.push(conn);
          job.reject(e);
          this.pump();
        },
      );
    }
  }

  close(): void {
    for (const conn of this.all) conn.close();
    for (const job of this.queue.splice(0)) job.reject(new Error("pool closed"));
  }
}
