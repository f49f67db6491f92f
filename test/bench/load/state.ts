import { SignJWT } from "jose";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Command = (payload: any) => Promise<unknown>;

/** What a load-generator process keeps between calls. */
export const state = {
  /** user id → JWT */
  tokens: new Map<string, string>(),
  users: [] as string[],
  tickets: [] as string[],
  openSockets: 0,
};

export async function mint(key: string, sub: string, expiresInSeconds = 3600): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + expiresInSeconds)
    .sign(new TextEncoder().encode(key));
}

export async function mintUsers(key: string, users: readonly string[]): Promise<void> {
  for (const user of users) {
    if (!state.tokens.has(user)) state.tokens.set(user, await mint(key, user));
  }
  state.users = [...users];
}

/** CPU of this process over a window, as % of one core. */
export function selfMeter(): () => { cpuMs: number; wallMs: number; percent: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const c = process.cpuUsage(c0);
    const cpuMs = (c.user + c.system) / 1000;
    const wallMs = performance.now() - t0;
    return { cpuMs, wallMs, percent: (cpuMs / wallMs) * 100 };
  };
}

/** Event-loop lag sampler: the worst delay of a 10 ms timer over the window. */
export function lagMeter(): () => number {
  let worst = 0;
  let expected = performance.now() + 10;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - expected);
    expected = now + 10;
  }, 10);
  return () => {
    clearInterval(timer);
    return worst;
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
