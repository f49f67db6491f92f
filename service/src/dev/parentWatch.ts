/**
 * `npm run dev` stopped by a signal to npm alone (`kill <npm's pid>`, an IDE's
 * stop button, a CI step's timeout) leaves its child running: npm exits
 * without passing the signal on, and the dev servers keep their ports. So the
 * dev process watches its launchers and stops when one is gone: its parent
 * and, on Linux, the processes above it up to npm (npm → sh → tsx's CLI →
 * this one). A process whose parent exits is re-parented, so a changed ppid
 * means "gone".
 */
import { readFileSync } from "node:fs";

const POLL_MS = 1000;

/** The parent pid of `pid` from /proc (Linux); undefined elsewhere or once it is gone. */
function parentOf(pid: number): number | undefined {
  try {
    // /proc/<pid>/stat: "pid (comm) state ppid …"; comm may hold spaces and parentheses, so read after the last ")".
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** How many launchers up to watch: npm → sh → tsx's CLI → this process. */
const LEVELS = 3;

/** Calls `onGone` once when a launcher exits; returns a function that stops watching. */
export function watchLauncher(onGone: (why: string) => void): () => void {
  // [pid, its parent] for the parent and the launchers above it (Linux: /proc), up to LEVELS, short of init.
  const chain: Array<[number, number | undefined]> = [];
  for (let pid: number | undefined = process.ppid; pid !== undefined && pid > 1 && chain.length < LEVELS; ) {
    const parent = parentOf(pid);
    chain.push([pid, parent]);
    pid = parent;
  }
  const parent = process.ppid;
  const timer = setInterval(() => {
    let why: string | undefined;
    if (process.ppid !== parent) why = `its parent process ${parent} exited`;
    for (const [pid, ppid] of chain) {
      if (why === undefined && ppid !== undefined && parentOf(pid) !== ppid) why = `the process that started ${pid} (${ppid}) exited`;
    }
    if (why === undefined) return;
    clearInterval(timer);
    onGone(why);
  }, POLL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
