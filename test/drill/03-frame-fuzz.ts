/**
 * Drill 3: frame fuzzing. FRAMES WebSocket frames (default 100,000) against
 * one real gateway process with the production defaults
 * (MAX_MESSAGE_BYTES 65536, MAX_FRAMES_PER_SECOND 50), written on raw
 * sockets so that anything can be sent: malformed JSON, wrong types, unknown
 * types, invalid UTF-8, fragmented messages (with protocol pings between the
 * fragments), binary frames, frames over the limit and over 16× the limit,
 * app-level and protocol-level ping floods, and protocol violations.
 *
 * Each frame must get what the contract says (docs/protocol.md §3, §4, §8.2):
 *   malformed / not UTF-8      → {"type":"error","code":"MESSAGE_MALFORMED","fatal":false}, still open
 *   wrong shape / unknown type → MESSAGE_INVALID / UNKNOWN_TYPE, fatal:false, still open
 *   ping                       → pong with the same id (also when fragmented)
 *   binary                     → error UNSUPPORTED_DATA (retry:false), close 1003
 *   > MAX_MESSAGE_BYTES        → error MESSAGE_TOO_BIG (retry:false), close 1009
 *   > 16 × MAX_MESSAGE_BYTES   → close 1009 from ws, no error frame
 *   over the frame budget      → error RATE_LIMITED (retry:true), close 4429
 *   protocol ping              → protocol pong
 *   protocol-ping flood        → error RATE_LIMITED, close 4429 (pings are frames, §8.2)
 *   protocol violations        → close 1002 (RFC 6455; the contract says nothing)
 * No crash; memory must be flat. The gateway runs with --inspect on loopback
 * so the drill can force a full GC (inspector protocol) and read the heap:
 * the live heap after a full GC may not grow by more than 4 MiB from the
 * middle of the run to its end (a per-connection leak of even 1 KiB would
 * show: some 2,000 connections come and go in the second half). RSS is
 * reported before, during and after.
 */
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { HttpPool } from "../bench/lib/http.js";
import { gcAndMemory, rssBytes, spawnGatewayProc } from "../bench/lib/procs.js";
import { clientFrame, connectFirstFrame, readFrame } from "../bench/lib/rawws.js";
import { prng } from "../bench/lib/stats.js";
import { startRedis } from "../support/redis-server.js";
import { check, drill, fmt, mintToken, ORIGIN, quick, sleep, tally, TEST_JWT_KEY, TEST_SERVICE_SECRET } from "./lib.js";

const TARGET_FRAMES = Number(process.env.DRILL3_FRAMES ?? 100_000);
const SEED = Number(process.env.DRILL3_SEED ?? Date.now() % 1_000_000);
const MAX = 65_536;
const PARALLEL = 24;

type Expect =
  | { kind: "pong"; id: string }
  | { kind: "error"; code: string }
  | { kind: "protocol_pong" };

interface Script {
  readonly category: string;
  readonly wire: Buffer[];
  readonly frames: number;
  /** Text answers expected, in order. */
  readonly expect: Expect[];
  /** undefined: stays open (the drill closes with 1000). */
  readonly close?: { code: number; errorCode?: string; retry?: boolean };
  /** Answers before the close that may be fewer than listed (floods). */
  readonly atMost?: boolean;
}

const OP_TEXT = 1;
const OP_CONT = 0;
const OP_BIN = 2;
const OP_PING = 9;

function text(s: string | Buffer, fin = true, opcode = OP_TEXT): Buffer {
  return clientFrame(opcode, Buffer.isBuffer(s) ? s : Buffer.from(s), fin);
}

/** Builds the fuzz scripts from a seeded PRNG, so a failure can be replayed with DRILL3_SEED. */
function generator(seed: number) {
  const rnd = prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  let idn = 0;
  const nextId = () => `p${(idn++).toString(36)}`;

  const garbageChars = '{}[]":,tfnul0123456789.-+eE abcxyz\\/\u00e9\u2603\ud83d\ude00\t\n';
  function malformed(): string {
    for (;;) {
      const len = 1 + int(60);
      let s = "";
      for (let i = 0; i < len; i++) s += garbageChars[int(garbageChars.length)];
      if (rnd() < 0.3) s = `{"type":"ping","id":"${s}`; // truncated JSON
      try {
        JSON.parse(s);
      } catch {
        return s;
      }
    }
  }
  const longId = () => "x".repeat(129 + int(200));
  const invalid: Array<() => string> = [
    () => String(int(1e6)),
    () => JSON.stringify("a string"),
    () => "null",
    () => "true",
    () => JSON.stringify([1, 2, { type: "ping" }]),
    () => JSON.stringify({ id: 1 }),
    () => JSON.stringify({ type: pick([1, null, true, {}, [], 2.5]) }),
    () => JSON.stringify({ type: "ping", id: pick([{}, [], true, null, longId()]) }),
    () => JSON.stringify({ type: "resume", last_seq: pick([-1, 1.5, "7", null, 2 ** 60, [], {}]) }),
    () => JSON.stringify({ type: "resume" }),
    () => JSON.stringify({ type: "resume", last_seq: 0, epoch: pick([5, {}, "", longId()]) }),
    () => JSON.stringify({ type: "chat_message", message_id: pick(["", 5, longId()]), thread_id: "t", text: "hi" }),
    () => JSON.stringify({ type: "chat_message", message_id: "m", thread_id: pick(["", 5, null]), text: "hi" }),
    () => JSON.stringify({ type: "chat_message", message_id: "m", thread_id: "t", text: pick(["", "   ", 5, null]) }),
    () => JSON.stringify({ type: "refresh_session", token: pick(["", 5, null, {}]) }),
    () => JSON.stringify({ type: "refresh_session" }),
  ];
  const unknown = () => JSON.stringify({ type: pick(["subscribe", "auth", "PING", "pong", "ack", "connection_established", "x".repeat(1 + int(40)), ""]) });
  function invalidUtf8(): Buffer {
    const prefix = Buffer.from('{"type":"ping","id":"');
    const bad = pick([[0xff], [0xc3, 0x28], [0xe2, 0x82], [0xf0, 0x28, 0x8c, 0xbc], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]);
    return Buffer.concat([prefix, Buffer.from(bad), Buffer.from('"}')]);
  }

  /** One message, maybe fragmented (2-4 pieces, maybe a protocol ping in between). */
  function message(payload: Buffer, wire: Buffer[], expect: Expect[], fragment: boolean): number {
    if (!fragment || payload.length < 4) {
      wire.push(text(payload));
      return 1;
    }
    const pieces = 2 + int(3);
    const cuts = [...new Set(Array.from({ length: pieces - 1 }, () => 1 + int(payload.length - 1)))].sort((a, b) => a - b);
    let frames = 0;
    let at = 0;
    [...cuts, payload.length].forEach((cut, i, all) => {
      wire.push(text(payload.subarray(at, cut), i === all.length - 1, i === 0 ? OP_TEXT : OP_CONT));
      frames++;
      at = cut;
      if (i < all.length - 1 && rnd() < 0.3) {
        wire.push(clientFrame(OP_PING, Buffer.from("mid")));
        expect.push({ kind: "protocol_pong" });
        frames++;
      }
    });
    return frames;
  }

  /** A connection that stays open: within the frame budget (≤ 100 tokens; a bad frame costs 10). */
  function openScript(): Script {
    const wire: Buffer[] = [];
    const expect: Expect[] = [];
    let frames = 0;
    let tokens = 0;
    const n = 8 + int(20);
    for (let i = 0; i < n; i++) {
      const r = rnd();
      const fragment = rnd() < 0.15;
      if (r < 0.1) {
        // A protocol ping is a frame: it costs one from the budget like any other (§8.2).
        if (tokens + 1 > 90) break;
        wire.push(clientFrame(OP_PING, randomBytes(int(20))));
        expect.push({ kind: "protocol_pong" });
        frames++;
        tokens += 1;
        continue;
      }
      if (r < 0.45 || tokens > 80) {
        if (tokens + 1 > 90) break;
        const id = nextId();
        const ex: Expect[] = [];
        frames += message(Buffer.from(JSON.stringify({ type: "ping", id })), wire, ex, fragment);
        expect.push(...ex, { kind: "pong", id });
        tokens += 1 + ex.length;
        continue;
      }
      if (tokens + 10 + 4 > 90) continue;
      tokens += 10;
      const ex: Expect[] = [];
      if (r < 0.65) {
        frames += message(Buffer.from(malformed()), wire, ex, fragment);
        expect.push(...ex, { kind: "error", code: "MESSAGE_MALFORMED" });
      } else if (r < 0.85) {
        frames += message(Buffer.from(pick(invalid)()), wire, ex, fragment);
        expect.push(...ex, { kind: "error", code: "MESSAGE_INVALID" });
      } else if (r < 0.93) {
        frames += message(Buffer.from(unknown()), wire, ex, fragment);
        expect.push(...ex, { kind: "error", code: "UNKNOWN_TYPE" });
      } else {
        frames += message(invalidUtf8(), wire, ex, fragment);
        expect.push(...ex, { kind: "error", code: "MESSAGE_MALFORMED" });
      }
      tokens += ex.length;
    }
    return { category: "open", wire, frames, expect };
  }

  /** A connection that ends with the contract's close. */
  function fatalScript(): Script {
    const wire: Buffer[] = [];
    const expect: Expect[] = [];
    let frames = 0;
    for (let i = int(3); i > 0; i--) {
      const id = nextId();
      wire.push(text(JSON.stringify({ type: "ping", id })));
      expect.push({ kind: "pong", id });
      frames++;
    }
    const r = rnd();
    if (r < 0.25) {
      wire.push(clientFrame(OP_BIN, randomBytes(1 + int(200))));
      return { category: "binary", wire, frames: frames + 1, expect, close: { code: 1003, errorCode: "UNSUPPORTED_DATA", retry: false } };
    }
    if (r < 0.4) {
      wire.push(text(Buffer.alloc(MAX + 1 + int(3 * MAX), 0x61)));
      return { category: "too big", wire, frames: frames + 1, expect, close: { code: 1009, errorCode: "MESSAGE_TOO_BIG", retry: false } };
    }
    if (r < 0.47) {
      // Fragments each under the limit, the message over it.
      const pieces = 3;
      for (let i = 0; i < pieces; i++) wire.push(text(Buffer.alloc(30_000, 0x62), i === pieces - 1, i === 0 ? OP_TEXT : OP_CONT));
      return { category: "too big, fragmented", wire, frames: frames + pieces, expect, close: { code: 1009, errorCode: "MESSAGE_TOO_BIG", retry: false } };
    }
    if (r < 0.49) {
      wire.push(text(Buffer.alloc(16 * MAX + 1 + int(1000), 0x63)));
      return { category: "over 16× the limit", wire, frames: frames + 1, expect, close: { code: 1009 } };
    }
    if (r < 0.69) {
      // App-level ping flood: the first ~100 are answered, then 4429.
      const n = 150 + int(100);
      for (let i = 0; i < n; i++) {
        const id = nextId();
        wire.push(text(JSON.stringify({ type: "ping", id })));
        expect.push({ kind: "pong", id });
      }
      return { category: "ping flood", wire, frames: frames + n, expect, close: { code: 4429, errorCode: "RATE_LIMITED", retry: true }, atMost: true };
    }
    if (r < 0.79) {
      // Bad frames cost ten: the eleventh trips the limit.
      const n = 12 + int(10);
      for (let i = 0; i < n; i++) {
        wire.push(text(malformed()));
        expect.push({ kind: "error", code: "MESSAGE_MALFORMED" });
      }
      return { category: "malformed flood", wire, frames: frames + n, expect, close: { code: 4429, errorCode: "RATE_LIMITED", retry: true }, atMost: true };
    }
    if (r < 0.87) {
      // A protocol-ping flood. §8.2: a socket that sends more than
      // MAX_FRAMES_PER_SECOND frames per second is closed with 4429
      // RATE_LIMITED, after its error frame (§3: every close the gateway
      // starts is preceded by one). Pings are frames (RFC 6455 §5.5).
      const n = 200 + int(300);
      for (let i = 0; i < n; i++) wire.push(clientFrame(OP_PING, Buffer.from(String(i))));
      return { category: "protocol ping flood", wire, frames: frames + n, expect, close: { code: 4429, errorCode: "RATE_LIMITED", retry: true } };
    }
    // Protocol violations (RFC 6455 §5): the WebSocket library closes with 1002.
    const violation = int(5);
    const kinds = ["continuation without start", "reserved opcode", "RSV1 without extension", "control frame over 125 bytes", "fragmented control frame"];
    let bad: Buffer;
    if (violation === 0) bad = clientFrame(OP_CONT, Buffer.from("x"));
    else if (violation === 1) bad = clientFrame(0x3, Buffer.from("x"));
    else if (violation === 2) {
      bad = clientFrame(OP_TEXT, Buffer.from('{"type":"ping"}'));
      bad[0] = bad[0]! | 0x40;
    } else if (violation === 3) bad = clientFrame(OP_PING, Buffer.alloc(200, 1));
    else bad = clientFrame(OP_PING, Buffer.from("x"), false);
    wire.push(bad);
    return { category: `protocol violation: ${kinds[violation]}`, wire, frames: frames + 1, expect, close: { code: 1002 } };
  }

  return () => (rnd() < 0.9 ? openScript() : fatalScript());
}

interface Outcome {
  readonly category: string;
  readonly ok: boolean;
  readonly why?: string;
  readonly frames: number;
}

async function runScript(port: number, ticketValue: string, script: Script): Promise<Outcome> {
  const first = await connectFirstFrame({ port, path: `/ws?ticket=${ticketValue}`, origin: ORIGIN, keep: true, timeoutMs: 10_000 });
  if (!first.socket || !first.payload.toString().startsWith('{"type":"connection_established"')) {
    return { category: script.category, ok: false, why: `connect: ${first.status} ${first.payload.toString().slice(0, 80)}`, frames: 0 };
  }
  const socket: Socket = first.socket;
  const texts: Array<Record<string, unknown>> = [];
  let protocolPongs = 0;
  let closeCode: number | undefined;
  let buf = first.rest ?? Buffer.alloc(0);
  let ended = false;
  const done = new Promise<void>((resolve) => {
    const parse = () => {
      for (;;) {
        const f = readFrame(buf);
        if (!f) return;
        buf = buf.subarray(f.used);
        if (f.opcode === 1) texts.push(JSON.parse(f.payload.toString()) as Record<string, unknown>);
        else if (f.opcode === 0xa) protocolPongs++;
        else if (f.opcode === 8) {
          closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
          socket.end();
          resolve();
        }
      }
    };
    socket.on("data", (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      parse();
      if (!script.close && expectedMet()) resolve();
    });
    socket.on("close", () => {
      ended = true;
      resolve();
    });
    socket.on("error", () => undefined);
    parse();
  });
  const appExpected = script.expect.filter((e) => e.kind !== "protocol_pong");
  const pongsExpected = script.expect.length - appExpected.length;
  const expectedMet = () => texts.length >= appExpected.length && protocolPongs >= pongsExpected;
  socket.write(Buffer.concat(script.wire));
  // Generous: on a loaded 2-core machine thousands of pipelined answers can take a while.
  const timer = new Promise<void>((resolve) => setTimeout(resolve, 30_000).unref());
  await Promise.race([done, timer]);

  const fail = (why: string): Outcome => {
    socket.destroy();
    return { category: script.category, ok: false, why, frames: script.frames };
  };
  // The answers, in order.
  const answers = texts.filter((t) => !(t.type === "error" && t.fatal === true));
  const limit = script.atMost ? Math.min(answers.length, appExpected.length) : appExpected.length;
  if (!script.atMost && answers.length !== appExpected.length) return fail(`${answers.length} answers for ${appExpected.length} frames: ${JSON.stringify(answers.slice(-2))}`);
  for (let i = 0; i < limit; i++) {
    const want = appExpected[i]!;
    const got = answers[i]!;
    if (want.kind === "pong" && !(got.type === "pong" && got.id === want.id)) return fail(`answer ${i}: want pong ${want.id}, got ${JSON.stringify(got).slice(0, 120)}`);
    if (want.kind === "error" && !(got.type === "error" && got.code === want.code && got.fatal === false && !("retry" in got))) {
      return fail(`answer ${i}: want ${want.code} fatal:false, got ${JSON.stringify(got).slice(0, 160)}`);
    }
  }
  if (script.atMost && answers.length < 5) return fail(`flood: only ${answers.length} answers before the limit`);
  if (!script.close) {
    if (protocolPongs !== pongsExpected) return fail(`${protocolPongs} protocol pongs for ${pongsExpected} pings`);
    if (closeCode !== undefined || ended) return fail(`closed (${closeCode ?? "no close frame"}) though every frame was survivable`);
    // Close politely; the socket must still be usable.
    socket.write(clientFrame(8, Buffer.from([0x03, 0xe8])));
    socket.end();
    return { category: script.category, ok: true, frames: script.frames + 1 };
  }
  const fatal = texts.filter((t) => t.type === "error" && t.fatal === true);
  if (closeCode !== script.close.code) return fail(`close ${closeCode ?? (ended ? "none (connection dropped)" : "none (timeout)")}, want ${script.close.code}`);
  if (script.close.errorCode) {
    if (fatal.length !== 1 || fatal[0]!.code !== script.close.errorCode || fatal[0]!.retry !== script.close.retry) {
      return fail(`want one error frame ${script.close.errorCode} retry:${script.close.retry} before the close, got ${JSON.stringify(fatal).slice(0, 200)}`);
    }
  } else if (fatal.length !== 0) return fail(`want a bare close, got ${JSON.stringify(fatal).slice(0, 200)}`);
  socket.destroy();
  return { category: script.category, ok: true, frames: script.frames };
}

drill(`drill 3: frame fuzzing (${TARGET_FRAMES.toLocaleString("en-US")} frames, seed ${SEED})`, quick ? 90_000 : 300_000, async () => {
  const redis = await startRedis();
  const gw = await spawnGatewayProc({
    name: "drill3-gw",
    nodeArgs: ["--inspect=127.0.0.1:0"],
    env: {
      NODE_ENV: "production",
      REDIS_URL: redis.url,
      ALLOWED_ORIGINS: ORIGIN,
      JWT_SECRET_KEY: TEST_JWT_KEY,
      SERVICE_SECRET: TEST_SERVICE_SECRET,
      TICKET_RATE_PER_IP: "1000000",
      TICKET_RATE_PER_USER: "100000",
    },
  });
  try {
    const users = Array.from({ length: 200 }, (_, i) => `drill3-user-${i}`);
    const tokens = await Promise.all(users.map((sub) => mintToken({ sub })));
    const pool = new HttpPool("127.0.0.1", gw.port, 16);
    let tk = 0;
    const newTicket = async (): Promise<string> => {
      const res = await pool.request({ method: "POST", path: "/api/v1/auth/websocket_ticket", headers: { authorization: `Bearer ${tokens[tk++ % tokens.length]}`, origin: ORIGIN } });
      if (res.status !== 201) throw new Error(`ticket ${res.status} ${res.body}`);
      return (JSON.parse(res.body) as { ticket: string }).ticket;
    };
    const next = generator(SEED);
    const rss: Array<[string, number]> = [["start", rssBytes(gw.pid)]];
    const heap: Array<[string, number]> = [["start", (await gcAndMemory(gw)).heapUsed]];
    const heapMarks: Array<Promise<void>> = [];
    const outcomes: Outcome[] = [];
    let frames = 0;
    const marks = [0.1, 0.5, 1].map((f) => Math.floor(f * TARGET_FRAMES));
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (frames < TARGET_FRAMES) {
          const script = next();
          frames += script.frames;
          const before = frames;
          outcomes.push(await runScript(gw.port, await newTicket(), script));
          for (const mark of marks) {
            if (before - script.frames < mark && before >= mark) {
              const label = `${Math.round((mark / TARGET_FRAMES) * 100)}%`;
              rss.push([label, rssBytes(gw.pid)]);
              heapMarks.push(gcAndMemory(gw).then((m) => void heap.push([label, m.heapUsed])));
            }
          }
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    pool.close();
    await Promise.all(heapMarks);
    await sleep(3000);
    rss.push(["settled", rssBytes(gw.pid)]);
    heap.push(["settled", (await gcAndMemory(gw)).heapUsed]);
    const alive = gw.alive();
    const health = await fetch(`${gw.url}/healthz`).then((r) => r.status, () => 0);
    const failures = outcomes.filter((o) => !o.ok);
    const mib = (b: number) => fmt(b / 2 ** 20, 1);
    const heapAt = (label: string) => heap.find(([l]) => l === label)?.[1] ?? NaN;
    const growth = heapAt("settled") - heapAt("50%");
    const allowed = 4 * 2 ** 20;
    const byCategory = tally(outcomes, (o) => o.category);
    const figures = [
      `${frames.toLocaleString("en-US")} frames on ${outcomes.length} connections in ${fmt(seconds, 1)} s`,
      `by connection kind ${JSON.stringify(byCategory)}`,
      `wrong answers ${failures.length}`,
      `RSS MiB ${rss.map(([l, b]) => `${l} ${mib(b)}`).join(", ")}`,
      `live heap after full GC MiB ${heap.map(([l, b]) => `${l} ${mib(b)}`).join(", ")} (second half ${growth >= 0 ? "+" : ""}${mib(growth)} MiB, allowed +${mib(allowed)})`,
      `process alive ${alive}, /healthz ${health}`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("no crash", alive && health === 200),
        check(
          "every frame got the contract's answer or close",
          failures.length === 0,
          Object.entries(tally(failures, (f) => f.category))
            .map(([category, n]) => `${category} ×${n}, e.g. ${failures.find((f) => f.category === category)!.why}`)
            .join(" | "),
        ),
        check(`all ${TARGET_FRAMES} frames sent`, frames >= TARGET_FRAMES),
        check("memory flat (live heap after a full GC)", growth <= allowed, `${mib(growth)} MiB`),
      ],
    };
  } finally {
    await gw.stop();
    await redis.stop();
  }
});
