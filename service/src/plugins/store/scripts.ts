/**
 * The store's Lua scripts, each one atomic operation on keys of one slot.
 * Each starts with a header: KEYS, ARGV and what it returns. The bus frame an
 * event is published in (`<seq> <epoch> <body>`) is built here in Lua and
 * read by codec.ts: change both together (test/unit/store-bus-codec.test.ts).
 */

/** A user's seq counter outlives any history (at most 7 days) by far: losing it changes the epoch. */
const SEQ_TTL_MS = 30 * 24 * 3600_000;

// Lua: `now` is the server's clock, so instances with skewed clocks agree.
const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// Lua: the epoch of the user's seq counter (KEYS[1]), created with `candidate`
// when missing. The counter also records the replication history
// (master_replid) it was last written under. Replication is asynchronous: a
// replica promoted by a failover, or a restart that reloaded an older
// snapshot, may hold an older counter than the one whose seqs clients have
// already seen, and would hand those seqs out again to other events. Under
// another history the epoch therefore changes, so clients resync instead of
// taking a reissued seq for one they already have (a counter without the
// field, written before this rule, adopts the current history). Without INFO
// (a server that refuses it in scripts) the rule is skipped.
const EPOCH = `
  local function epoch_of(key, candidate)
    local info = redis.pcall('INFO', 'replication')
    local history = false
    if type(info) == 'string' then history = string.match(info, 'master_replid:(%x+)') or false end
    local h = redis.call('HMGET', key, 'epoch', 'r')
    if h[1] and (not history or not h[2] or h[2] == history) then
      if history and not h[2] then redis.call('HSET', key, 'r', history) end
      return h[1]
    end
    redis.call('HSET', key, 'epoch', candidate)
    if history then redis.call('HSET', key, 'r', history) end
    return candidate
  end`;

// Lua: a fixed-window counter (gwAddHits, gwIssueTicket). The expiry is set
// whenever missing, so a key can never be left without one.
const COUNT_IN_WINDOW = `
  local function count_in_window(key, by, window_ms)
    local c = redis.call('INCRBY', key, by)
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, window_ms)
      ttl = tonumber(window_ms)
    end
    return c, ttl
  end`;

export const SCRIPTS = {
  // KEYS: the user's ticket counter, the user's tokens-not-before marker, the
  // ticket. ARGV: window ms, per-user limit, token iat ms (-1: none), record
  // json, ticket ttl ms (grace included). Counts first, so a refused request
  // counts too; a marker that is not a number refuses every token (fail
  // closed), as tokensNotBefore reads it.
  // Returns: {'issued'}, {'limited', ms until the window resets} or {'revoked'}.
  gwIssueTicket: {
    keys: 3,
    lua: `
      ${COUNT_IN_WINDOW}
      local c, ttl = count_in_window(KEYS[1], 1, ARGV[1])
      if c > tonumber(ARGV[2]) then return {'limited', ttl} end
      local nbf = redis.call('GET', KEYS[2])
      if nbf then
        local at = tonumber(nbf)
        local iat = tonumber(ARGV[3])
        if at == nil or at ~= at or math.abs(at) == math.huge then return {'revoked'} end
        if at > 0 and (iat < 0 or iat < at) then return {'revoked'} end
      end
      redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
      return {'issued'}`,
  },
  // KEYS: accepted ids, claims. ARGV: message id, ttl ms, stale ms. An id is
  // "started" once accepted (for ttl ms, while among the newest kept), "pending"
  // while a hand-off claimed it less than stale ms ago, else claimed here.
  // Claims left by an instance that died mid-hand-off are swept once there
  // are many, so neither key grows without bound.
  // Returns: 'claimed', 'started' or 'pending'.
  gwClaim: {
    keys: 2,
    lua: `
      ${NOW}
      local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
      if at and now - tonumber(at) < tonumber(ARGV[2]) then return 'started' end
      local stale = tonumber(ARGV[3])
      local c = redis.call('HGET', KEYS[2], ARGV[1])
      if c and now - tonumber(c) < stale then return 'pending' end
      if redis.call('HLEN', KEYS[2]) >= 64 then
        local all = redis.call('HGETALL', KEYS[2])
        for i = 1, #all, 2 do
          if now - tonumber(all[i + 1]) >= stale then redis.call('HDEL', KEYS[2], all[i]) end
        end
      end
      redis.call('HSET', KEYS[2], ARGV[1], now)
      redis.call('PEXPIRE', KEYS[2], 2 * stale)
      return 'claimed'`,
  },
  // KEYS: accepted ids, claims. ARGV: message id, ttl ms, max ids kept. The
  // oldest ids beyond the bound, and any older than ttl, are forgotten.
  // Returns: nothing.
  gwAccept: {
    keys: 2,
    lua: `
      ${NOW}
      redis.call('HDEL', KEYS[2], ARGV[1])
      redis.call('ZADD', KEYS[1], now, ARGV[1])
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
      local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
      if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
      redis.call('PEXPIRE', KEYS[1], ARGV[2])`,
  },
  // KEYS: revoked. ARGV: at ms, keep ms. A late, older revocation never undoes a newer one.
  // Returns: nothing.
  gwRevoke: {
    keys: 1,
    lua: `
      local cur = redis.call('GET', KEYS[1])
      local at = ARGV[1]
      if cur and tonumber(cur) > tonumber(at) then at = cur end
      redis.call('SET', KEYS[1], at, 'PX', ARGV[2])`,
  },
  // KEYS: conns. ARGV: member, max, ttl ms. A member already present is a refresh.
  // Returns: 1 added or refreshed, 0 refused (the user is at max).
  gwAddConnection: {
    keys: 1,
    lua: `
      ${NOW}
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
      if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
        return 0
      end
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
      if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
      return 1`,
  },
  // KEYS: conns. ARGV: ttl ms, members… A live connection whose entry was lost
  // (expired during an outage, or data loss) is counted again.
  // Returns: nothing.
  gwRefreshConnections: {
    keys: 1,
    lua: `
      ${NOW}
      local ttl = tonumber(ARGV[1])
      for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
      if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end`,
  },
  // KEYS: seq. ARGV: epoch candidate. Creates the counter (and so fixes the
  // epoch) on first sight, so the epoch a client first sees survives its first event.
  // Returns: {latest seq, epoch}.
  gwHead: {
    keys: 1,
    lua: `
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      return {tonumber(redis.call('HGET', KEYS[1], 'n')) or 0, epoch}`,
  },
  // KEYS: seq, hist, channel. ARGV: epoch candidate, body, max events, ttl ms.
  // SPUBLISH in the script makes seq order and channel order the same; the
  // channel is declared as a key so that a cluster checks it is in the slot
  // of the other two (a sharded channel must be served by the script's node).
  // Returns: {seq, epoch}; publishes `<seq> <epoch> <body>` on the channel.
  gwPublish: {
    keys: 3,
    lua: `
      ${NOW}
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local ttl = tonumber(ARGV[4])
      redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], '*', 's', n, 'b', ARGV[2])
      redis.call('XTRIM', KEYS[2], 'MINID', now - ttl)
      redis.call('PEXPIRE', KEYS[2], ttl)
      redis.call('SPUBLISH', KEYS[3], n .. ' ' .. epoch .. ' ' .. ARGV[2])
      return {n, epoch}`,
  },
  // KEYS: seq, hist, channel. ARGV: epoch candidate, max events, ttl ms,
  // bodies… The batch form of gwPublish: one round trip for many events of
  // one user, with contiguous seqs, each published on the channel in order.
  // Returns: {first seq, epoch}; publishes one `<seq> <epoch> <body>` per body, in order.
  gwPublishMany: {
    keys: 3,
    lua: `
      ${NOW}
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      local count = #ARGV - 3
      local last = redis.call('HINCRBY', KEYS[1], 'n', count)
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local first = last - count + 1
      for i = 1, count do
        local n = first + i - 1
        redis.call('XADD', KEYS[2], '*', 's', n, 'b', ARGV[3 + i])
        redis.call('SPUBLISH', KEYS[3], n .. ' ' .. epoch .. ' ' .. ARGV[3 + i])
      end
      local ttl = tonumber(ARGV[3])
      redis.call('XTRIM', KEYS[2], 'MAXLEN', '=', ARGV[2])
      redis.call('XTRIM', KEYS[2], 'MINID', now - ttl)
      redis.call('PEXPIRE', KEYS[2], ttl)
      return {first, epoch}`,
  },
  // KEYS: seq, hist. ARGV: epoch candidate, after seq, max events, ttl ms.
  // The stream is contiguous in seq, so its last k entries are the wanted ones.
  // Returns: {latest seq, epoch, {seq, body, seq, body, …}}: empty when more than max events are missing.
  gwReadHistory: {
    keys: 2,
    lua: `
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      local n = tonumber(redis.call('HGET', KEYS[1], 'n')) or 0
      local k = n - tonumber(ARGV[2])
      if k <= 0 or k > tonumber(ARGV[3]) then return {n, epoch, {}} end
      ${NOW}
      local oldest = now - tonumber(ARGV[4])
      local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', k)
      local out = {}
      for i = #entries, 1, -1 do
        local e = entries[i]
        if tonumber(string.match(e[1], '^%d+')) >= oldest then
          out[#out + 1] = e[2][2]
          out[#out + 1] = e[2][4]
        end
      end
      return {n, epoch, out}`,
  },
  // KEYS: admission ticket, its used marker (both in the ticket's user's slot,
  // keys.ts admissionTicketKeys). ARGV: used marker ms, now ms (the gateway's
  // clock, as the checks have always used), '1'/'0' an Origin was sent, the
  // Origin, connection id, max connections, connection ttl ms, epoch candidate.
  // The ticket's value is keys.ts admissionTicketValue: `<user key prefix>
  // <expiresAt> <issuedAt> <sessionExpiresAt> <origin or -> <record json>`,
  // the JSON returned as stored, never decoded here. The user's keys
  // are named from that prefix, so they are not in KEYS (the caller cannot know
  // them before the ticket is read); they hash to the same slot as KEYS by
  // construction, which is all Redis Cluster checks. One atomic step: takes the
  // ticket (once, ever; spent whatever follows), then the checks of
  // rules.ts admissionRefusal in its order, then the per-user connection limit
  // (gwAddConnection's rule), then the stream head (gwHead's).
  // Returns: {'ok', record json, latest seq, epoch}, {'used'}, {'unknown'} or
  // {<refusal: TICKET_EXPIRED | ORIGIN_FORBIDDEN | SESSION_REVOKED | SESSION_EXPIRED | TOO_MANY_CONNECTIONS>}.
  gwAdmit: {
    keys: 2,
    lua: `
      ${EPOCH}
      local v = redis.call('GETDEL', KEYS[1])
      if not v then
        if redis.call('EXISTS', KEYS[2]) == 1 then return {'used'} end
        return {'unknown'}
      end
      redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
      local user, expires, issued, session, origin, json = string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+) (.*)$')
      local at = tonumber(ARGV[2])
      if tonumber(expires) <= at then return {'TICKET_EXPIRED'} end
      if origin ~= '-' and (ARGV[3] ~= '1' or origin ~= ARGV[4]) then return {'ORIGIN_FORBIDDEN'} end
      local r = redis.call('GET', user .. ':revoked')
      if r then
        local revoked = tonumber(r)
        -- not a number (nil, or NaN): revoked forever, as failClosed reads it
        if not revoked or revoked ~= revoked or revoked >= tonumber(issued) then return {'SESSION_REVOKED'} end
      end
      if tonumber(session) <= at then return {'SESSION_EXPIRED'} end
      ${NOW}
      local conns = user .. ':conns'
      local ttl = tonumber(ARGV[7])
      redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
      if redis.call('ZCARD', conns) >= tonumber(ARGV[6]) then return {'TOO_MANY_CONNECTIONS'} end
      redis.call('ZADD', conns, now + ttl, ARGV[5])
      if redis.call('PTTL', conns) < ttl then redis.call('PEXPIRE', conns, ttl) end
      local seq = user .. ':seq'
      local epoch = epoch_of(seq, ARGV[8])
      redis.call('PEXPIRE', seq, ${SEQ_TTL_MS})
      return {'ok', json, tonumber(redis.call('HGET', seq, 'n')) or 0, epoch}`,
  },
  // KEYS: seq, revoked. ARGV: epoch candidate. What a connection admitted
  // before its user's channel was subscribed may have missed (hub.ts).
  // Returns: {latest seq, epoch, revoked marker or false}.
  gwUserState: {
    keys: 2,
    lua: `
      ${EPOCH}
      local epoch = epoch_of(KEYS[1], ARGV[1])
      redis.call('PEXPIRE', KEYS[1], ${SEQ_TTL_MS})
      return {tonumber(redis.call('HGET', KEYS[1], 'n')) or 0, epoch, redis.call('GET', KEYS[2])}`,
  },
  // KEYS: rate key. ARGV: hits, window ms. Counts `hits` at once (store.hit is one).
  // Returns: {count in the window, ms until it resets}.
  gwAddHits: {
    keys: 1,
    lua: `
      ${COUNT_IN_WINDOW}
      local c, ttl = count_in_window(KEYS[1], ARGV[1], ARGV[2])
      return {c, ttl}`,
  },
} as const satisfies Record<string, { keys: number; lua: string }>;

export type ScriptName = keyof typeof SCRIPTS;
