/**
 * Drill 8: every secret rotated under load, through the runbook's steps
 * (docs/operations.md, "Rotating secrets").
 *
 * Two real gateway processes on one redis-server (production's shape: the
 * default user off, the gateway logging in as its ACL user), behind a
 * round-robin router (./fleet.ts). A steady load runs throughout: ticket
 * requests by users whose app reuses its token for a while (as a real app
 * does until it expires), short connections (ticket, connect, close),
 * internal publishes by an agent backend, chat messages handed off to the
 * agent backend's webhook receiver (./chat.ts), and one long-lived socket
 * per user that follows its events. Each rotation then goes through its
 * numbered steps: a step is a new revision (the environment changed,
 * instances restarted one at a time, the old one drained with SIGTERM)
 * and/or a change outside the gateway (the auth service signs with the new
 * key; the agent backends send the new secret; the ACL policy's passwords
 * change; the webhook receiver holds other keys). A socket closed by a drain
 * reconnects to a serving instance with a new ticket and resumes, as the SDK
 * does; a chat message whose socket was drained is sent again, same id.
 *
 * Pass when: 0 failed requests (every ticket 201, every connect established,
 * every publish 202, every chat message acked, every reconnect established),
 * every hand-off verified by the receiver, every drain close a restart close,
 * 0 lost events (every socket ends holding each of its user's seqs, in order,
 * none twice), and each step's confirmation holds (the old Redis password and
 * the old webhook key refused at the end). Adding a rotation is one entry of
 * ROTATIONS.
 */
import { randomBytes } from "node:crypto";
import { SignJWT } from "jose";
import { Redis } from "ioredis";
import { gatewayAclRule } from "../../service/src/plugins/store/acl.js";
import { startRedis } from "../support/redis-server.js";
import { newWebhookSecret, sendChat, WebhookReceiver } from "./chat.js";
import { Fleet, type Env } from "./fleet.js";
import { check, drill, fmt, ORIGIN, publish, quick, sleep, StreamClient, tally, TEST_JWT_KEY, TEST_SERVICE_SECRET, ticket, type Check } from "./lib.js";
import { every, shortConnection, Tally } from "./load.js";

const USERS = quick ? 12 : 40;
const TICKETS_PER_S = quick ? 10 : 25;
const CONNECTS_PER_S = quick ? 3 : 8;
const PUBLISHES_PER_S = quick ? 20 : 60;
const CHATS_PER_S = quick ? 4 : 10;
/** How long a simulated app keeps using one token before it asks the auth service again. */
const TOKEN_REUSE_MS = quick ? 2000 : 8000;
/** Steady load between steps, so each new state is exercised. */
const SETTLE_MS = quick ? 1000 : 4000;

/** What the world outside the gateway currently uses. */
interface World {
  /** The key the auth service signs user tokens with. */
  authKey: string;
  /** The secret the agent backends send to the internal API. */
  serviceSecret: string;
  /** The agent backend's webhook receiver (it verifies hand-offs with the secrets it holds). */
  readonly receiver: WebhookReceiver;
  /** Redis as its operator (the ACL policy's owner) and the gateway's ACL user. */
  readonly redis: { readonly url: string; readonly admin: Redis; readonly user: string };
}

interface Step {
  /** The runbook's step, as printed. */
  readonly say: string;
  /** Wait this long first (e.g. for every token signed with the old key to be replaced). */
  readonly waitMs?: number;
  /** A new revision with these environment changes (undefined removes one), rolled out one instance at a time. */
  readonly deploy?: Record<string, string | undefined>;
  /** A change outside the gateway (made, and awaited, before the step's new revision, if it has one). */
  readonly outside?: (world: World) => unknown;
  /** The runbook's "Confirm:" of this step, checked after it. */
  readonly confirm?: (world: World) => Promise<Check>;
}

interface Rotation {
  readonly name: string;
  readonly steps: (env: Env, world: World) => Step[];
}

const newSecret = () => randomBytes(36).toString("base64url");

/** The rotations, each the numbered steps of docs/operations.md ("Rotating secrets"). */
const ROTATIONS: Rotation[] = [
  {
    name: "user-token key (JWT_SECRET_KEY)",
    steps: (env) => {
      const [OLD, NEW] = [env.JWT_SECRET_KEY!, newSecret()];
      return [
        { say: "1. new revision: JWT_SECRET_KEY=new, JWT_SECRET_KEY_PREVIOUS=old", deploy: { JWT_SECRET_KEY: NEW, JWT_SECRET_KEY_PREVIOUS: OLD } },
        { say: "2. the auth service signs with the new key", outside: (w) => (w.authKey = NEW) },
        { say: "3.-4. after the longest token lifetime, new revision without JWT_SECRET_KEY_PREVIOUS", waitMs: TOKEN_REUSE_MS + 500, deploy: { JWT_SECRET_KEY_PREVIOUS: undefined } },
      ];
    },
  },
  {
    name: "service secret (SERVICE_SECRET)",
    steps: (env) => {
      const [OLD, NEW] = [env.SERVICE_SECRET!, newSecret()];
      return [
        { say: "1. new revision: SERVICE_SECRET=new, SERVICE_SECRET_PREVIOUS=old", deploy: { SERVICE_SECRET: NEW, SERVICE_SECRET_PREVIOUS: OLD } },
        { say: "2. the agent backends restart with the new secret", outside: (w) => (w.serviceSecret = NEW) },
        { say: "3. new revision without SERVICE_SECRET_PREVIOUS", deploy: { SERVICE_SECRET_PREVIOUS: undefined } },
      ];
    },
  },
  {
    name: "Redis password (REDIS_PASSWORD of the ACL user)",
    steps: (env) => {
      const [OLD, NEW] = [env.REDIS_PASSWORD!, newSecret()];
      return [
        {
          say: "1. the ACL user accepts the old and the new password, then a new revision with REDIS_PASSWORD=new",
          outside: (w) => setAclPasswords(w, [NEW, OLD]),
          deploy: { REDIS_PASSWORD: NEW },
        },
        {
          say: "2. the old revision has no instances left: revoke the old password",
          outside: (w) => setAclPasswords(w, [NEW]),
          confirm: async (w) => {
            const [old, fresh] = [await authAs(w, OLD), await authAs(w, NEW)];
            return check("Redis: the old password is refused, the new one accepted", old.startsWith("WRONGPASS") && fresh === "OK", `old: ${old}, new: ${fresh}`);
          },
        },
      ];
    },
  },
  {
    name: "agent webhook secret (AGENT_WEBHOOK_SECRET)",
    steps: (env) => {
      const [OLD, NEW] = [env.AGENT_WEBHOOK_SECRET!, newWebhookSecret()];
      return [
        { say: "1. the agent backend accepts the old and the new secret", outside: (w) => w.receiver.accept({ old: OLD, new: NEW }) },
        { say: "2. new revision: AGENT_WEBHOOK_SECRET=new", deploy: { AGENT_WEBHOOK_SECRET: NEW } },
        {
          say: "3. the agent backend drops the old secret",
          outside: (w) => w.receiver.accept({ new: NEW }),
          confirm: async (w) => {
            const [old, fresh] = [w.receiver.probe(OLD), w.receiver.probe(NEW)];
            return check("webhook: a hand-off signed with the old secret is refused, the new one accepted", old === 401 && fresh === 204, `old: ${old}, new: ${fresh}`);
          },
        },
      ];
    },
  },
];

/** What the Pulumi program does to the cluster's ACL policy: the gateway user's rule, set again with these passwords. */
async function setAclPasswords(world: World, passwords: string[]): Promise<void> {
  await world.redis.admin.call("ACL", "SETUSER", world.redis.user, ...gatewayAclRule(passwords).split(" "));
}

/** A fresh connection as the gateway's user: "OK" when it logs in and serves a PING, or the error's code (WRONGPASS). */
async function authAs(world: World, password: string): Promise<string> {
  const { url, user: username } = world.redis;
  const client = new Redis(url, { username, password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  let refusal: string | undefined;
  client.on("error", (err: Error) => (refusal ??= err.message));
  try {
    await client.connect();
    return (await client.ping()) === "PONG" ? "OK" : "no PONG";
  } catch (err) {
    if (refusal !== undefined) return refusal.split(" ")[0] ?? "error";
    return (err as Error).message.split(" ")[0] ?? "error";
  } finally {
    client.disconnect();
  }
}

drill(`drill 8: secret rotations under load (${ROTATIONS.length} rotations, 2 instances, ${USERS} users)`, quick ? 115_000 : 540_000, async () => {
  // Production's shape: the default user is off, the gateway logs in as its ACL user.
  const aclUser = "chat-gateway";
  const admin = { username: "admin", password: newSecret() };
  const redisPassword = newSecret();
  const redis = await startRedis({ acl: { users: [`admin on >${admin.password} ~* &* +@all`, `${aclUser} ${gatewayAclRule([redisPassword])}`], admin } });
  const receiver = await WebhookReceiver.start();
  const webhookSecret = newWebhookSecret();
  receiver.accept({ old: webhookSecret });
  const env: Env = {
    NODE_ENV: "production",
    REDIS_URL: redis.url,
    REDIS_USERNAME: aclUser,
    REDIS_PASSWORD: redisPassword,
    AGENT_WEBHOOK_URL: receiver.url,
    AGENT_WEBHOOK_SECRET: webhookSecret,
    ALLOWED_ORIGINS: ORIGIN,
    JWT_SECRET_KEY: TEST_JWT_KEY,
    SERVICE_SECRET: TEST_SERVICE_SECRET,
    TICKET_RATE_PER_IP: "1000000",
    TICKET_RATE_PER_USER: "100000",
    SHUTDOWN_GRACE_MS: "4000",
    LOG_LEVEL: "warn",
  };
  const fleet = await Fleet.start(env, 2, "drill8-gw");
  const world: World = { authKey: TEST_JWT_KEY, serviceSecret: TEST_SERVICE_SECRET, receiver, redis: { url: redis.url, admin: new Redis(redis.url, admin), user: aclUser } };
  const tally = new Tally();
  const confirmations: Check[] = [];
  let chatResends = 0;
  try {
    const users = Array.from({ length: USERS }, (_, i) => `drill8-user-${i}`);
    const tokens = new Map<string, { token: string; at: number }>();
    /** The app's token: reused for TOKEN_REUSE_MS, then a new one from the auth service (signed with its key of the moment). */
    const tokenOf = async (user: string): Promise<string> => {
      const held = tokens.get(user);
      if (held && Date.now() - held.at < TOKEN_REUSE_MS) return held.token;
      const token = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(user).setIssuedAt().setExpirationTime("1h").sign(new TextEncoder().encode(world.authKey));
      tokens.set(user, { token, at: Date.now() });
      return token;
    };

    // One long-lived socket per user, reconnected after every drain.
    const streams = users.map((u) => new StreamClient(u, () => tokenOf(u)));
    const drainCloses: number[] = [];
    let running = true;
    const follow = (c: StreamClient): void => {
      c.ws!.once("close", (code) => {
        if (!running) return;
        drainCloses.push(code);
        const reconnect = (): void => {
          if (!running) return;
          c.connect(fleet.pick().url).then(
            () => (tally.note("reconnect", "ok", true), follow(c)),
            (err: Error) => (tally.note("reconnect", err.message, false), setTimeout(reconnect, 500)),
          );
        };
        setTimeout(reconnect, Math.random() * 1000);
      });
    };
    for (const c of streams) {
      await c.connect(fleet.pick().url);
      follow(c);
    }

    const lastAccepted = new Map<string, number>();
    const loops = [
      every(1000 / TICKETS_PER_S, () => running, async (i) => {
        const user = users[i % users.length]!;
        const r = await ticket(fleet.pick().url, user, await tokenOf(user)).catch((err: Error) => ({ status: err.message }));
        tally.note("ticket", r.status, r.status === 201);
      }),
      every(1000 / CONNECTS_PER_S, () => running, async (i) => {
        const user = users[i % users.length]!;
        const outcome = await shortConnection(fleet.pick().url, user, await tokenOf(user));
        tally.note("connect", outcome, outcome === "ok");
      }),
      every(1000 / PUBLISHES_PER_S, () => running, async (i) => {
        const user = users[i % users.length]!;
        const r = await publish(fleet.pick().url, user, { i }, world.serviceSecret);
        tally.note("publish", r.status, r.status === 202);
        if (r.status === 202 && r.seq !== undefined) lastAccepted.set(user, Math.max(r.seq, lastAccepted.get(user) ?? 0));
      }),
      every(1000 / CHATS_PER_S, () => running, async (i) => {
        const user = users[i % users.length]!;
        const outcome = await sendChat(() => fleet.pick().url, user, () => tokenOf(user), () => chatResends++);
        tally.note("chat", outcome, outcome === "ok");
      }),
    ];

    await sleep(SETTLE_MS);
    const timeline: string[] = [];
    for (const rotation of ROTATIONS) {
      const started = Date.now();
      for (const step of rotation.steps(fleet.currentEnv, world)) {
        if (step.waitMs) await sleep(step.waitMs);
        await step.outside?.(world);
        if (step.deploy) await fleet.deploy(step.deploy);
        process.stderr.write(`  ${rotation.name}: ${step.say} (failed so far: ${tally.failed})\n`);
        await sleep(SETTLE_MS);
        if (step.confirm) confirmations.push(await step.confirm(world));
      }
      timeline.push(`${rotation.name} ${fmt((Date.now() - started) / 1000, 1)} s`);
    }

    running = false;
    await Promise.all(loops);
    const settled = await Promise.all(streams.map((c) => c.until(() => c.pending.size === 0 && c.last >= (lastAccepted.get(c.user) ?? 0), 10_000)));
    const lost = streams.reduce((n, c) => n + Math.max(0, (lastAccepted.get(c.user) ?? 0) - c.last), 0);
    const dups = streams.reduce((n, c) => n + c.dups, 0);
    const resyncs = streams.reduce((n, c) => n + c.resyncs, 0);
    for (const c of streams) c.close();
    const published = [...lastAccepted.values()].reduce((a, b) => a + b, 0);
    const badCloses = drainCloses.filter((code) => code !== 4012);
    const figures = [
      `rotations: ${timeline.join(", ")}`,
      `${fleet.restarts.length} instance restarts (${fmt(Math.max(...fleet.restarts.map((r) => r.ms)) / 1000, 1)} s longest; old instances exited ${JSON.stringify(tally_(fleet.restarts.map((r) => String(r.oldExit))))})`,
      `requests ${JSON.stringify(tally.counts)}`,
      `drain closes ${JSON.stringify(tally_(drainCloses.map(String)))}`,
      `events: ${published} published, lost ${lost}, duplicates ${dups}, resyncs ${resyncs}`,
      `chat: ${chatResends} resent after a drain, webhook verified ${JSON.stringify(receiver.verified)}, ${receiver.duplicates} resends deduplicated`,
    ].join("; ");
    return {
      figures,
      checks: [
        check("0 failed requests", tally.failed === 0, tally.failures.join(", ")),
        check("every kind of load ran", ["ticket 201", "connect ok", "publish 202", "chat ok"].every((k) => (tally.counts[k] ?? 0) > 0), JSON.stringify(tally.counts)),
        check("every drain closed with 4012 SERVICE_RESTART", badCloses.length === 0, badCloses.join(",")),
        check("every old instance exited 0", fleet.restarts.every((r) => r.oldExit === 0), JSON.stringify(fleet.restarts)),
        check("0 lost events: every socket holds its user's seqs in order", lost === 0 && settled.every(Boolean), `lost ${lost}`),
        check("nothing twice", dups === 0, String(dups)),
        check("no resync needed", resyncs === 0, String(resyncs)),
        check("every hand-off verified by the agent backend", receiver.verified.refused === undefined, JSON.stringify(receiver.verified)),
        ...confirmations,
      ],
    };
  } finally {
    await fleet.stop();
    world.redis.admin.disconnect();
    await receiver.close();
    await redis.stop();
  }
});

function tally_(values: string[]): Record<string, number> {
  return tally(values, (v) => v);
}
