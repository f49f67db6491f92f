/**
 * The abusers of the "hostile neighbours" drill (10-hostile-neighbours.ts), in
 * a process of their own so that their CPU does not count against the
 * ordinary users' measured connect times in the drill's process.
 *
 *   tsx test/drill/hostile/abusers.ts <gateway url> <abusers> <resume sockets per abuser>
 *
 * Each abuser does issue 13's items 1-4 at once, and starts again whatever
 * the gateway does to it: resume loops from several sockets (item 1), a
 * ticketless socket that floods frames (item 2), request bodies that trickle
 * in (item 3), and upgrades of /healthz that ignore the close (item 4).
 * It prints one JSON line of counts when it gets SIGTERM.
 */
import WebSocket from "ws";
import { connect, type Socket } from "node:net";
import { flood, rawPeer, textFrame, upgradeRequest } from "../../support/raw-ws.js";
import { mintToken, ORIGIN } from "../../support/gateway.js";

const [url = "", abusersArg = "10", socketsArg = "5"] = process.argv.slice(2);
const ABUSERS = Number(abusersArg);
const RESUME_SOCKETS = Number(socketsArg);
const counts = { resumeSockets: 0, resumeCloses: {} as Record<string, number>, resumesSent: 0, floods: 0, floodBytes: 0, trickles: 0, trickleAnswers: {} as Record<string, number>, strayUpgrades: 0, strayStatus: {} as Record<string, number> };
let running = true;
const { hostname, port } = new URL(url);
/**
 * A dropped flood or a refused upgrade tries again after this: the drill is
 * about what one connection can make the gateway hold, not about connection
 * churn as such (the load balancer and Cloud Armor meet that at the edge).
 */
const RECONNECT_PAUSE_MS = 200;
/**
 * What one flooding connection writes at most: far more than the gateway
 * may keep (16 KiB before redemption, 4 frames after a refusal), and enough
 * to have taken the unbounded buffer past 100 MB in a few connections, but
 * not the loopback bandwidth of a shared 2-core machine.
 */
const FLOOD_BYTES = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

async function ticketFor(user: string): Promise<string | undefined> {
  const res = await fetch(`${url}/api/v1/auth/websocket_ticket`, {
    method: "POST",
    headers: { authorization: `Bearer ${await mintToken({ sub: user })}`, origin: ORIGIN },
  }).catch(() => undefined);
  if (res?.status !== 201) return undefined;
  return ((await res.json()) as { ticket: string }).ticket;
}

/** Item 1: a socket that sends `resume` from the start of history every 22 ms; when closed, another. */
async function resumeLoop(user: string): Promise<void> {
  while (running) {
    const ticket = await ticketFor(user);
    if (!ticket) {
      await sleep(1000); // over the ticket limit: wait like any client
      continue;
    }
    counts.resumeSockets++;
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/ws?ticket=${ticket}`, { origin: ORIGIN });
    ws.on("error", () => undefined);
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: "resume", last_seq: 0 }));
          counts.resumesSent++;
        }
      }, 22);
      ws.on("close", (code) => {
        clearInterval(timer);
        bump(counts.resumeCloses, String(code));
        resolve();
      });
    });
  }
}

/** Item 2: a socket without a ticket that sends as fast as it can; when dropped, another. */
async function floodLoop(): Promise<void> {
  const frame = textFrame("x".repeat(4096));
  while (running) {
    const peer = rawPeer(url, upgradeRequest(`${hostname}:${port}`, "/ws", { Origin: ORIGIN }));
    counts.floods++;
    counts.floodBytes += await flood(peer.socket, frame, 3000, FLOOD_BYTES);
    peer.socket.destroy();
    await peer.ended;
    await sleep(RECONNECT_PAUSE_MS);
  }
}

/** Item 3: ticket requests whose body trickles in, one byte every 5 s; when answered, another. */
async function trickleLoop(user: string): Promise<void> {
  const token = await mintToken({ sub: user });
  while (running) {
    counts.trickles++;
    const socket: Socket = connect(Number(port), hostname);
    socket.on("error", () => undefined);
    socket.write(`POST /api/v1/auth/websocket_ticket HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`);
    let answer = "";
    socket.on("data", (d) => (answer += d.toString()));
    const timer = setInterval(() => socket.writable && socket.write(" "), 5000);
    await new Promise((r) => socket.once("close", r));
    clearInterval(timer);
    bump(counts.trickleAnswers, /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? "none");
  }
}

/** Item 4: upgrades of /healthz whose answers are never read and whose closes are ignored. */
async function strayUpgradeLoop(): Promise<void> {
  while (running) {
    const peer = rawPeer(url, upgradeRequest(`${hostname}:${port}`, "/healthz?ticket=stray", { Origin: ORIGIN }));
    counts.strayUpgrades++;
    bump(counts.strayStatus, String((await peer.response).status));
    await Promise.race([peer.ended, sleep(30_000)]);
    peer.socket.destroy();
    await sleep(RECONNECT_PAUSE_MS);
  }
}

/** Which attacks to run (all by default; DRILL10_KINDS=resume,flood to look at some alone). */
const kinds = new Set((process.env.DRILL10_KINDS ?? "resume,flood,trickle,stray").split(","));
const loops: Array<Promise<void>> = [];
for (let a = 0; a < ABUSERS; a++) {
  const user = `abuser-${a}`;
  if (kinds.has("resume")) for (let s = 0; s < RESUME_SOCKETS; s++) loops.push(resumeLoop(user));
  if (kinds.has("flood")) loops.push(floodLoop());
  if (kinds.has("trickle")) for (let t = 0; t < 5; t++) loops.push(trickleLoop(user));
  if (kinds.has("stray")) loops.push(strayUpgradeLoop());
}
process.stdout.write("ABUSING\n");
process.once("SIGTERM", () => {
  running = false;
  process.stdout.write(`${JSON.stringify(counts)}\n`);
  process.exit(0);
});
