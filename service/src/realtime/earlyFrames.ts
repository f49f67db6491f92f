import type { RawData, WebSocket } from "ws";

/**
 * The frames a client sends before its ticket is redeemed, kept for the
 * connection, within a bound. Unbounded, one socket without a ticket made
 * the process buffer everything it sent (83 → 687 MB in 3 s). A client
 * following the protocol sends nothing, or one `resume`, before
 * `connection_established`; a few frames of a few KiB leave room for that.
 *
 * Once the socket is refused nothing more is kept at all, and a peer that
 * goes on sending after our close is dropped at once instead of being
 * read for the 3 s the closing handshake may take.
 */
const EARLY_FRAME_LIMITS = { frames: 8, bytes: 16 * 1024, afterRefusal: 4 } as const;

export class EarlyFrames {
  private frames: Array<[RawData, boolean]> = [];
  private bytes = 0;
  private overflowed = false;
  private readonly keep = (data: RawData, isBinary: boolean) => this.onFrame(data, isBinary);

  /** `onOverflow` is called once, when the peer sends more than the bound before its ticket is redeemed. */
  constructor(
    private readonly socket: WebSocket,
    private readonly onOverflow: () => void,
  ) {
    socket.on("message", this.keep);
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    if (this.overflowed) return;
    this.bytes += byteLength(data);
    if (this.frames.length >= EARLY_FRAME_LIMITS.frames || this.bytes > EARLY_FRAME_LIMITS.bytes) {
      this.overflowed = true;
      this.frames = [];
      this.onOverflow();
      return;
    }
    this.frames.push([data, isBinary]);
  }

  /** True once the peer sent more than the bound: the socket is being refused. */
  get overflow(): boolean {
    return this.overflowed;
  }

  /** Stops keeping frames and hands over what was kept (to the connection, which reads from here on). */
  take(): ReadonlyArray<[RawData, boolean]> {
    this.socket.off("message", this.keep);
    const kept = this.frames;
    this.frames = [];
    return kept;
  }

  /**
   * The socket is being refused: drop what was kept, keep nothing more, and
   * terminate a peer that sends more than a few frames after our close.
   */
  discard(): void {
    this.take();
    let after = 0;
    this.socket.on("message", () => {
      if (++after > EARLY_FRAME_LIMITS.afterRefusal) this.socket.terminate();
    });
  }
}

function byteLength(data: RawData): number {
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.length, 0);
  return data instanceof ArrayBuffer ? data.byteLength : data.length;
}
