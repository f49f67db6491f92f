import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";

/**
 * A WebSocket client with no manners, over a raw TCP socket: it sends frames
 * whenever it likes (before the 101, after the server's close), ignores the
 * closing handshake, and reads the server's frames itself. The `ws` client
 * would stop sending after a close and answer every handshake politely.
 */
export interface RawPeer {
  readonly socket: Socket;
  /** The HTTP status line and headers of the server's answer to the upgrade. */
  readonly response: Promise<{ status: number; head: string; body: string }>;
  /** Text frames the server sent, and its close code (once it sent one). */
  readonly texts: string[];
  closeCode: number | undefined;
  /** Resolves when the TCP connection has ended, with the ms since connect. */
  readonly ended: Promise<number>;
}

export function maskedFrame(opcode: number, payload: Buffer | string): Buffer {
  const data = typeof payload === "string" ? Buffer.from(payload) : payload;
  const mask = randomBytes(4);
  const len = data.length;
  const header = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len]) : Buffer.alloc(4);
  if (len >= 126) {
    if (len > 0xffff) throw new Error("frames over 64 KiB are not needed here");
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(len, 2);
  }
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = data[i]! ^ mask[i % 4]!;
  return Buffer.concat([header, mask, masked]);
}

export const textFrame = (text: string): Buffer => maskedFrame(0x1, text);

export function upgradeRequest(host: string, path: string, headers: Record<string, string> = {}): string {
  const lines = [
    `GET ${path} HTTP/1.1`,
    `Host: ${host}`,
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** Opens a TCP connection to `baseUrl` and writes `first` (an upgrade request, maybe followed by frames). */
export function rawPeer(baseUrl: string, first: string | Buffer): RawPeer {
  const { hostname, port } = new URL(baseUrl);
  const socket = connect(Number(port), hostname);
  const started = Date.now();
  socket.on("error", () => undefined);
  socket.write(first);
  let buffer: Buffer = Buffer.alloc(0);
  let headDone = false;
  let resolveResponse: (r: { status: number; head: string; body: string }) => void = () => undefined;
  const response = new Promise<{ status: number; head: string; body: string }>((r) => (resolveResponse = r));
  const peer: RawPeer = {
    socket,
    response,
    texts: [],
    closeCode: undefined,
    ended: new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now() - started))),
  };
  let status = 0;
  let head = "";
  socket.on("data", (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    if (!headDone) {
      const end = buffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      head = buffer.subarray(0, end).toString();
      status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      buffer = buffer.subarray(end + 4);
      headDone = true;
      if (status !== 101) {
        socket.on("close", () => resolveResponse({ status, head, body: buffer.toString() }));
        socket.on("end", () => resolveResponse({ status, head, body: buffer.toString() }));
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? -1);
        if (length >= 0 && buffer.length >= length) resolveResponse({ status, head, body: buffer.subarray(0, length).toString() });
        return;
      }
      resolveResponse({ status, head, body: "" });
    }
    if (status !== 101) return;
    buffer = readFrames(buffer, peer);
  });
  socket.on("close", () => resolveResponse({ status, head, body: buffer.toString() }));
  return peer;
}

/** Parses the server's (unmasked) frames; returns what is left of an incomplete one. */
function readFrames(buffer: Buffer, peer: RawPeer): Buffer {
  for (;;) {
    if (buffer.length < 2) return buffer;
    const opcode = buffer[0]! & 0x0f;
    let len = buffer[1]! & 0x7f;
    let offset = 2;
    if (len === 126) {
      if (buffer.length < 4) return buffer;
      len = buffer.readUInt16BE(2);
      offset = 4;
    } else if (len === 127) {
      if (buffer.length < 10) return buffer;
      len = Number(buffer.readBigUInt64BE(2));
      offset = 10;
    }
    if (buffer.length < offset + len) return buffer;
    const payload = buffer.subarray(offset, offset + len);
    if (opcode === 0x1) peer.texts.push(payload.toString());
    if (opcode === 0x8 && payload.length >= 2) peer.closeCode = payload.readUInt16BE(0);
    buffer = buffer.subarray(offset + len);
  }
}

/** Writes `frame` over and over, as fast as the socket takes it, until the connection ends, `ms` pass or `maxBytes` are written. Resolves to the bytes written. */
export async function flood(socket: Socket, frame: Buffer, ms: number, maxBytes = Infinity): Promise<number> {
  const until = Date.now() + ms;
  let written = 0;
  while (Date.now() < until && !socket.destroyed && socket.writable && written < maxBytes) {
    const ok = socket.write(frame);
    written += frame.length;
    if (!ok) await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 50);
      socket.once("drain", () => (clearTimeout(t), resolve()));
    });
    else if (written % (frame.length * 64) === 0) await new Promise((r) => setImmediate(r));
  }
  return written;
}
