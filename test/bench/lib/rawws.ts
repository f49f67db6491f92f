/**
 * The cheapest possible WebSocket connect for the connect-rate benchmarks:
 * write the upgrade request on a raw socket, read the 101, read the first
 * (unmasked, unfragmented) server frame, send a masked close frame, and let
 * the server end the TCP connection. No `ws` object, no per-frame machinery:
 * the client side costs far less than the server it measures.
 */
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";

export interface FirstFrame {
  /** HTTP status of the upgrade response (101 when it was accepted). */
  readonly status: number;
  /** The first frame's opcode (1 text, 8 close …) and payload. */
  readonly opcode: number;
  readonly payload: Buffer;
  /** ms from the first byte written to the first frame read. */
  readonly ms: number;
}

const CRLFCRLF = Buffer.from("\r\n\r\n");
const CLOSE_1000 = (() => {
  const mask = randomBytes(4);
  const code = Buffer.from([0x03, 0xe8]);
  return Buffer.from([0x88, 0x82, ...mask, code[0]! ^ mask[0]!, code[1]! ^ mask[1]!]);
})();

/** Reads one server frame from `buf` at `at`; undefined when incomplete. */
export function readFrame(buf: Buffer, at = 0): { fin: boolean; opcode: number; payload: Buffer; used: number } | undefined {
  if (buf.length < at + 2) return undefined;
  const b0 = buf[at]!;
  const b1 = buf[at + 1]!;
  let len = b1 & 0x7f;
  let off = at + 2;
  if (len === 126) {
    if (buf.length < off + 2) return undefined;
    len = buf.readUInt16BE(off);
    off += 2;
  } else if (len === 127) {
    if (buf.length < off + 8) return undefined;
    len = Number(buf.readBigUInt64BE(off));
    off += 8;
  }
  const masked = (b1 & 0x80) !== 0;
  const maskKey = masked ? buf.subarray(off, off + 4) : undefined;
  if (masked) off += 4;
  if (buf.length < off + len) return undefined;
  let payload = buf.subarray(off, off + len);
  if (maskKey) {
    payload = Buffer.from(payload);
    for (let i = 0; i < payload.length; i++) payload[i]! ^= maskKey[i & 3]!;
  }
  return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload, used: off + len - at };
}

/** A masked client frame. */
export function clientFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (len < 126) head[1] = 0x80 | len;
  else if (len < 65536) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const body = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) body[i] = payload[i]! ^ mask[i & 3]!;
  return Buffer.concat([head, mask, body]);
}

export interface ConnectOptions {
  readonly port: number;
  readonly path: string;
  readonly origin?: string;
  readonly timeoutMs?: number;
  /** Keep the socket open and hand it over instead of closing after the first frame. */
  readonly keep?: boolean;
}

/** Upgrade + first frame. Resolves (never rejects) with status 0 on a network error or timeout. */
export function connectFirstFrame(options: ConnectOptions): Promise<FirstFrame & { socket?: Socket; rest?: Buffer }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = connect({ host: "127.0.0.1", port: options.port, noDelay: true });
    let buf: Buffer = Buffer.alloc(0);
    let status = 0;
    let headEnd = -1;
    let done = false;
    const finish = (result: FirstFrame & { socket?: Socket; rest?: Buffer }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      socket.destroy();
      finish({ status: 0, opcode: -1, payload: Buffer.alloc(0), ms: performance.now() - started });
    }, options.timeoutMs ?? 10_000);
    socket.on("error", () => finish({ status, opcode: -1, payload: Buffer.alloc(0), ms: performance.now() - started }));
    socket.on("close", () => finish({ status, opcode: -1, payload: Buffer.alloc(0), ms: performance.now() - started }));
    socket.on("data", (chunk: Buffer) => {
      if (done) return;
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (headEnd < 0) {
        headEnd = buf.indexOf(CRLFCRLF);
        if (headEnd < 0) return;
        status = Number(buf.toString("latin1", 9, 12));
        if (status !== 101) {
          socket.destroy();
          finish({ status, opcode: -1, payload: Buffer.alloc(0), ms: performance.now() - started });
          return;
        }
        buf = buf.subarray(headEnd + 4);
      }
      let frame = readFrame(buf);
      // A protocol ping or pong (a heartbeat tick that came first) is not the first message.
      while (frame && (frame.opcode === 0x9 || frame.opcode === 0xa)) {
        buf = buf.subarray(frame.used);
        frame = readFrame(buf);
      }
      if (!frame) return;
      const ms = performance.now() - started;
      if (options.keep) {
        socket.removeAllListeners("data");
        finish({ status, opcode: frame.opcode, payload: Buffer.from(frame.payload), ms, socket, rest: buf.subarray(frame.used) });
        return;
      }
      // Close politely; the server ends the TCP connection (so TIME_WAIT lands on its side).
      socket.write(CLOSE_1000);
      socket.removeAllListeners("data");
      socket.on("data", () => undefined);
      socket.once("end", () => socket.destroy());
      setTimeout(() => socket.destroy(), 3000).unref();
      finish({ status, opcode: frame.opcode, payload: Buffer.from(frame.payload), ms });
    });
    const key = randomBytes(16).toString("base64");
    socket.write(
      `GET ${options.path} HTTP/1.1\r\nhost: 127.0.0.1:${options.port}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
        `sec-websocket-key: ${key}\r\nsec-websocket-version: 13\r\n${options.origin ? `origin: ${options.origin}\r\n` : ""}\r\n`,
    );
  });
}
