//! The Redis control store: the semantics of [`StoreModel`] on a real Redis,
//! so agents in any number of processes and hosts can meet.
//!
//! [`StoreModel`]: slimebench_proto::StoreModel
//!
//! # Layout
//!
//! - `agent:{alias}`: a HASH `{incarnation, host, pid, wire_version}` (all
//!   canonical decimals but `host`) with a `PEXPIRE` TTL, as the original's
//!   NanoCtrl stores agents. Anything else under that key (a string, a log, a
//!   hash with missing, extra or non-canonical fields, incarnation 0) is
//!   [`AgentLookup::Corrupt`]: it is never taken for a lease and never
//!   overwritten by a claim.
//! - exchange and MR keys: plain strings without TTL.
//! - [`LogKind::Stream`] logs: a Redis stream, one field `v` per entry;
//!   [`LogKind::Queue`] logs: a Redis list. Both get a TTL on every append.
//!
//! # Atomicity
//!
//! Every [`StoreOp`] but `DeleteMatching` is one Lua script (`EVALSHA`, loaded
//! again by the `redis` crate after `NOSCRIPT`, e.g. after a Redis restart), so
//! the ownership check and the write it guards cannot be separated by another
//! client. The scripts decide *what to do*; the holder they report is decoded
//! here. Both apply the same validity rules (`lease()` in `lease_lua!` and
//! `decode_lease`), and a disagreement is reported as
//! [`StoreFailure::Unexpected`] instead of being acted upon.
//!
//! # Notification cursor
//!
//! The `u64` cursor of [`ControlStore::read_notifications`] holds a stream id
//! `ms-seq` as `ms << 20 | seq`, `seq` clamped to `2^20 - 1` (a clamped cursor
//! resumes after the whole millisecond: never a duplicate, never a loop).
//! Cursor 0 reads from the beginning. Our appends choose ids of the form
//! `ms-(µs within the ms × 1024)`, so `seq` stays below `2^20` and a stream
//! deleted and re-created within the same millisecond (release, then a new
//! notification) still gets ids above those a reader has already seen (with
//! Redis' own `*` ids the new stream would restart at `ms-0`).
//!
//! # Waiting
//!
//! The [`ConnectionManager`] multiplexes every command of this store over one
//! connection, so a blocking read (`XREAD BLOCK`, `BLPOP`) would stall the
//! heartbeat and every other command behind it until it returns. Rather than
//! keeping a second, dedicated connection per agent (one more socket to
//! reconnect and authenticate, and a blocking command that must still be
//! cut short for the inbox list), [`ControlStore::read_notifications`] polls:
//! one cheap script per look, 2 ms between looks at first, doubling up to
//! 25 ms, never past `wait`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, Value};
use slimebench_proto::store::{AgentLookup, ControlStore, LogKind, StoreFailure, StoreOp, StoreReply};
use slimebench_proto::values::{AgentRecord, ControlValue, ValueError, MAX_VALUE_LEN};
use tokio::time::Instant;

use super::redact;

/// How to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// Connection attempts before giving up (at least one is made).
    pub connect_attempts: u32,
    /// Pause after the first failed attempt; doubles after each further one.
    pub connect_backoff: Duration,
    /// Bound on one TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// Bound on one command's reply.
    pub response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_attempts: 5,
            connect_backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        }
    }
}

/// Why [`RedisStore::connect`] failed. URLs are always shown redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisConnectError {
    /// The URL does not parse or asks for something this build cannot do.
    #[error("invalid Redis URL {url}: {cause}")]
    InvalidUrl { url: String, cause: String },
    /// Wrong password, unknown ACL user, or a password is required: not retried.
    #[error("authentication failed for {url}: {cause}")]
    Auth { url: String, cause: String },
    /// Redis answered but refuses this connection (e.g. ACL permissions): not retried.
    #[error("Redis at {url} refused the connection check: {cause}")]
    Refused { url: String, cause: String },
    /// Nothing answered after every attempt.
    #[error("cannot reach Redis at {url} after {attempts} attempt(s): {cause}")]
    Unreachable { url: String, attempts: u32, cause: String },
}

/// A control store on Redis. Cheap to clone (clones share one connection).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// The URL with any password redacted.
    shown: String,
    scripts: Arc<Scripts>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.shown).finish()
    }
}

// ---------------------------------------------------------------------------
// Lua scripts
// ---------------------------------------------------------------------------

/// Shared prelude: what counts as a lease, and how a key is described to Rust.
///
/// Guarantees: `lease(key, inc)` is `'ours'`/`'other'` exactly when
/// `decode_lease` decodes the key as `Present` (same incarnation or not),
/// `'absent'` when the key does not exist, `'corrupt'` otherwise.
/// `describe(key)` reports a key's type and (bounded) content.
macro_rules! lease_lua {
    () => {
        r#"
local U64_MAX = '18446744073709551615'
local U32_MAX = '4294967295'
local function canonical(s, max)
  if not s then return false end
  if s == '0' then return true end
  if not string.find(s, '^[1-9][0-9]*$') then return false end
  return #s < #max or (#s == #max and s <= max)
end
local function utf8_ok(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then len = 3
    elseif c >= 0xF0 and c <= 0xF4 then len = 4
    else return false end
    if i + len - 1 > n then return false end
    for j = i + 1, i + len - 1 do
      local d = string.byte(s, j)
      if d < 0x80 or d > 0xBF then return false end
    end
    if len > 1 then
      local d = string.byte(s, i + 1)
      if (c == 0xE0 and d < 0xA0) or (c == 0xED and d > 0x9F)
        or (c == 0xF0 and d < 0x90) or (c == 0xF4 and d > 0x8F) then
        return false
      end
    end
    i = i + len
  end
  return true
end
local function lease(key, inc)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return 'absent' end
  if t ~= 'hash' or redis.call('HLEN', key) ~= 4 then return 'corrupt' end
  local f = redis.call('HMGET', key, 'incarnation', 'host', 'pid', 'wire_version')
  if not (canonical(f[1], U64_MAX) and f[1] ~= '0') then return 'corrupt' end
  if not (f[2] and #f[2] <= 255 and utf8_ok(f[2])) then return 'corrupt' end
  if not (canonical(f[3], U32_MAX) and canonical(f[4], U32_MAX)) then return 'corrupt' end
  if f[1] == inc then return 'ours' end
  return 'other'
end
local function describe(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'string' then
    local n = redis.call('STRLEN', key)
    if n > 4096 then return {t, n, false} end
    return {t, n, redis.call('GET', key)}
  elseif t == 'hash' then
    local n = redis.call('HLEN', key)
    if n ~= 4 then return {t, n} end
    local f = redis.call('HMGET', key, 'incarnation', 'host', 'pid', 'wire_version')
    for i = 1, 4 do
      if f[i] then f[i] = string.sub(f[i], 1, 300) end
    end
    return {t, n, f[1], f[2], f[3], f[4]}
  end
  return {t}
end
"#
    };
}

/// Claim: writes our lease hash (replacing whatever was there) and its TTL
/// unless a valid lease of another incarnation or a corrupt value holds the
/// key; then it writes nothing and reports the holder and its PTTL.
/// KEYS: lease. ARGV: incarnation, host, pid, wire_version, ttl_ms.
const CLAIM_LUA: &str = concat!(
    lease_lua!(),
    r#"
local st = lease(KEYS[1], ARGV[1])
if st == 'other' or st == 'corrupt' then
  return {'conflict', redis.call('PTTL', KEYS[1]), describe(KEYS[1])}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'incarnation', ARGV[1], 'host', ARGV[2], 'pid', ARGV[3], 'wire_version', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'claimed'}
"#
);

/// Refresh: extends the TTL only while the lease holds our incarnation;
/// otherwise changes nothing and reports the holder.
/// KEYS: lease. ARGV: incarnation, ttl_ms.
const REFRESH_LUA: &str = concat!(
    lease_lua!(),
    r#"
if lease(KEYS[1], ARGV[1]) == 'ours' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'refreshed'}
end
return {'not_owner', describe(KEYS[1])}
"#
);

/// PutOwned: sets every entry (plain strings, no TTL) only while the lease
/// holds our incarnation; otherwise sets none and reports the holder.
/// KEYS: lease, entry keys... ARGV: incarnation, entry values...
const PUT_OWNED_LUA: &str = concat!(
    lease_lua!(),
    r#"
if lease(KEYS[1], ARGV[1]) ~= 'ours' then
  return {'not_owner', describe(KEYS[1])}
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i])
end
return {'put'}
"#
);

/// Fetch: one consistent snapshot of the lease and the value keys. Strings
/// come back whole; other types only as their type (and a lease hash's fields).
/// KEYS: lease, value keys...
const FETCH_LUA: &str = concat!(
    lease_lua!(),
    r#"
local out = {describe(KEYS[1])}
for i = 2, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t == 'string' then
    out[i] = {t, redis.call('GET', KEYS[i])}
  else
    out[i] = describe(KEYS[i])
  end
end
return out
"#
);

/// Append: when a liveness key is given and does not exist, writes nothing.
/// Otherwise replaces a value of the wrong type, appends (stream: `XADD
/// MAXLEN = n` with an id above the stream's last, see the module docs;
/// queue: `RPUSH` + `LTRIM` to the last n) and sets the TTL, all at once.
/// KEYS: log [, lease]. ARGV: 'stream'|'queue', value, max_len, ttl_ms, has_lease.
const APPEND_LUA: &str = r#"
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return {'skipped'}
end
local key = KEYS[1]
local t = redis.call('TYPE', key)['ok']
if ARGV[1] == 'stream' then
  if t ~= 'stream' and t ~= 'none' then redis.call('DEL', key) end
  local now = redis.call('TIME')
  local usec = tonumber(now[2])
  local ms_str = now[1] .. string.format('%03d', math.floor(usec / 1000))
  local seq = (usec % 1000) * 1024
  local id = ms_str .. '-' .. string.format('%d', seq)
  if redis.call('EXISTS', key) == 1 then
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    if #last == 0 then
      id = '*'
    else
      local lms, lseq = string.match(last[1][1], '^(%d+)-(%d+)$')
      local ms = tonumber(ms_str)
      lms = tonumber(lms)
      lseq = tonumber(lseq)
      if ms < lms or (ms == lms and seq <= lseq) then id = '*' end
    end
  end
  redis.call('XADD', key, 'MAXLEN', '=', ARGV[3], id, 'v', ARGV[2])
else
  if t ~= 'list' and t ~= 'none' then redis.call('DEL', key) end
  redis.call('RPUSH', key, ARGV[2])
  redis.call('LTRIM', key, '-' .. ARGV[3], '-1')
end
redis.call('PEXPIRE', key, ARGV[4])
return {'appended'}
"#;

/// Release: deletes the lease and the keys only when the lease holds our
/// incarnation or is absent; a lease of another incarnation or a corrupt
/// value keeps everything. Returns the number of keys actually removed.
/// KEYS: lease, keys... ARGV: incarnation.
const RELEASE_LUA: &str = concat!(
    lease_lua!(),
    r#"
local st = lease(KEYS[1], ARGV[1])
if st == 'other' or st == 'corrupt' then return 0 end
local n = 0
if st == 'ours' then n = n + redis.call('DEL', KEYS[1]) end
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
end
return n
"#
);

/// Read: at most ARGV[2] entries in all, from the stream after the exclusive
/// id ARGV[1] (ids and first field values), then popped from the inbox list;
/// keys of another type read as empty and are left alone.
/// KEYS: stream, inbox. ARGV: start id (exclusive), max.
const READ_LUA: &str = r#"
local max = tonumber(ARGV[2])
local ids, vals, popped = {}, {}, {}
if max > 0 and redis.call('TYPE', KEYS[1])['ok'] == 'stream' then
  local es = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', max)
  for i, e in ipairs(es) do
    ids[i] = e[1]
    vals[i] = e[2][2] or ''
  end
end
local room = max - #ids
if room > 0 and redis.call('TYPE', KEYS[2])['ok'] == 'list' then
  popped = redis.call('LPOP', KEYS[2], room)
end
return {ids, vals, popped}
"#;

struct Scripts {
    claim: Script,
    refresh: Script,
    put_owned: Script,
    fetch: Script,
    append: Script,
    release: Script,
    read: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            claim: Script::new(CLAIM_LUA),
            refresh: Script::new(REFRESH_LUA),
            put_owned: Script::new(PUT_OWNED_LUA),
            fetch: Script::new(FETCH_LUA),
            append: Script::new(APPEND_LUA),
            release: Script::new(RELEASE_LUA),
            read: Script::new(READ_LUA),
        }
    }
}

// ---------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------

/// `SCAN ... COUNT` hint and `UNLINK` batch size.
const SCAN_COUNT: usize = 500;
/// SCAN rounds per pattern before giving up (500 × 200 000 = 10^8 keys).
const MAX_SCAN_ROUNDS: usize = 200_000;
/// Longest TTL we send (100 years; Redis refuses overflowing expiry times).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Largest `max_len` / read count we send.
const MAX_COUNT: usize = 1 << 40;
/// Polling pauses of `read_notifications`.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(25);
/// Hard bound on looks per `read_notifications` call (besides `wait`).
const MAX_POLLS: u128 = 100_000;

/// Bits of the stream id's sequence number in the cursor.
const SEQ_BITS: u32 = 20;
const SEQ_MAX: u64 = (1 << SEQ_BITS) - 1;

// ---------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------

impl RedisStore {
    /// Connect to `url` (`redis://[user:password@]host[:port][/db]`) and
    /// check the connection with a `PING`. Unreachable: retried
    /// `opts.connect_attempts` times with doubling backoff. Refused
    /// credentials: reported at once.
    ///
    /// # Errors
    /// [`RedisConnectError`], naming the redacted URL.
    pub async fn connect(url: &str, opts: RedisOptions) -> Result<RedisStore, RedisConnectError> {
        let shown = redact(url);
        // Passwords as written in the URL and as decoded: never in a message.
        let mut secrets: Vec<String> = url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .and_then(|(cred, _)| cred.split_once(':'))
            .map(|(_, pw)| pw.to_string())
            .into_iter()
            .collect();
        let client = redis::Client::open(url).map_err(|e| RedisConnectError::InvalidUrl {
            url: shown.clone(),
            cause: scrub(e.to_string(), &secrets),
        })?;
        if let Some(pw) = client.get_connection_info().redis_settings().password() {
            secrets.push(pw.to_string());
        }
        let scrub = |s: String| scrub(s, &secrets);
        let config = ConnectionManagerConfig::new()
            // Our own loop below retries the first connection; after that
            // every command finding the connection broken starts one
            // reconnect attempt, so commands fail fast while Redis is down.
            .set_number_of_retries(0)
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_response_timeout(Some(opts.response_timeout));
        let attempts = opts.connect_attempts.max(1);
        let mut backoff = opts.connect_backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match Self::try_connect(&client, config.clone()).await {
                Ok(conn) => {
                    tracing::debug!(url = %shown, attempt, "connected to Redis");
                    return Ok(RedisStore {
                        conn,
                        shown,
                        scripts: Arc::new(Scripts::new()),
                    });
                }
                Err(e) if is_auth_failure(&e) => {
                    return Err(RedisConnectError::Auth {
                        url: shown,
                        cause: scrub(e.to_string()),
                    })
                }
                Err(e) if is_refusal(&e) => {
                    return Err(RedisConnectError::Refused {
                        url: shown,
                        cause: scrub(e.to_string()),
                    })
                }
                Err(e) => {
                    last = scrub(e.to_string());
                    tracing::debug!(url = %shown, attempt, error = %last, "Redis not reachable yet");
                }
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        Err(RedisConnectError::Unreachable {
            url: shown,
            attempts,
            cause: last,
        })
    }

    async fn try_connect(
        client: &redis::Client,
        config: ConnectionManagerConfig,
    ) -> Result<ConnectionManager, RedisError> {
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        if pong != "PONG" {
            return Err(RedisError::from((ErrorKind::Client, "PING did not answer PONG", pong)));
        }
        Ok(conn)
    }
}

/// `s` with every non-empty secret replaced.
fn scrub(s: String, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|p| !p.is_empty())
        .fold(s, |acc, p| acc.replace(p.as_str(), "***"))
}

fn is_auth_failure(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

fn is_refusal(e: &RedisError) -> bool {
    matches!(e.code(), Some("NOPERM")) || e.kind() == ErrorKind::InvalidClientConfig
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

fn failure(e: RedisError) -> StoreFailure {
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreFailure::Unexpected(e.to_string()),
        _ => StoreFailure::Unavailable(e.to_string()),
    }
}

fn unexpected(what: &str, v: &Value) -> StoreFailure {
    let mut s = format!("{what}: {v:?}");
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    StoreFailure::Unexpected(s)
}

fn array(v: Value) -> Result<Vec<Value>, StoreFailure> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(unexpected("expected an array", &other)),
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Result<&str, StoreFailure> {
    bytes(v)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| unexpected("expected a string", v))
}

fn int(v: &Value) -> Result<i64, StoreFailure> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(unexpected("expected an integer", other)),
    }
}

/// First element of a script reply (its tag) and the rest.
fn tagged(v: Value) -> Result<(String, Vec<Value>), StoreFailure> {
    let mut a = array(v)?;
    if a.is_empty() {
        return Err(StoreFailure::Unexpected("empty script reply".into()));
    }
    let tag = text(&a[0])?.to_string();
    a.remove(0);
    Ok((tag, a))
}

/// A canonical decimal (no sign, no leading zero) of type `T`.
fn canonical<T: std::str::FromStr + ToString>(field: &str, raw: &[u8]) -> Result<T, String> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<T>().ok().filter(|n| n.to_string() == s))
        .ok_or_else(|| {
            format!(
                "lease field `{field}` is not a canonical decimal: {:?}",
                String::from_utf8_lossy(raw)
            )
        })
}

/// Decode a `describe(key)` reply of the scripts into what the key holds
/// as a lease. Must agree with `lease()` of `LEASE_LUA` on Present vs not.
fn decode_lease(desc: Value) -> Result<AgentLookup, StoreFailure> {
    let d = array(desc)?;
    let Some(kind) = d.first() else {
        return Err(StoreFailure::Unexpected("empty key description".into()));
    };
    let kind = text(kind)?;
    Ok(match kind {
        "none" => AgentLookup::Absent,
        "string" => {
            let len = usize::try_from(int(d.get(1).unwrap_or(&Value::Nil))?).unwrap_or(0);
            if len > MAX_VALUE_LEN {
                AgentLookup::Corrupt(ValueError::TooLong { len }.to_string())
            } else {
                let raw = d.get(2).and_then(bytes).unwrap_or_default();
                match AgentRecord::decode(raw) {
                    // The model would take this for a lease; a lease is a hash here.
                    Ok(_) => AgentLookup::Corrupt("key holds a string (a JSON lease record), not a lease hash".into()),
                    Err(e) => AgentLookup::Corrupt(e.to_string()),
                }
            }
        }
        "hash" => {
            let n = int(d.get(1).unwrap_or(&Value::Nil))?;
            match decode_hash(n, d.get(2..).unwrap_or_default()) {
                Ok(r) => AgentLookup::Present(r),
                Err(e) => AgentLookup::Corrupt(e),
            }
        }
        "list" | "stream" => AgentLookup::Corrupt("key holds a log, not a lease".into()),
        other => AgentLookup::Corrupt(format!("key holds a {other}, not a lease")),
    })
}

/// The four fields of a lease hash (`n` = its field count) into a record.
fn decode_hash(n: i64, fields: &[Value]) -> Result<AgentRecord, String> {
    if n != 4 || fields.len() != 4 {
        return Err(format!(
            "lease hash has {n} fields, expected incarnation, host, pid, wire_version"
        ));
    }
    let names = ["incarnation", "host", "pid", "wire_version"];
    let mut raw: [&[u8]; 4] = [&[]; 4];
    for (i, (f, name)) in fields.iter().zip(names).enumerate() {
        raw[i] = bytes(f).ok_or_else(|| format!("lease hash lacks field `{name}`"))?;
    }
    let record = AgentRecord {
        incarnation: canonical("incarnation", raw[0])?,
        host: String::from_utf8(raw[1].to_vec()).map_err(|_| "lease field `host` is not UTF-8".to_string())?,
        pid: canonical("pid", raw[2])?,
        wire_version: canonical("wire_version", raw[3])?,
    };
    record.validate().map_err(|e| e.to_string())?;
    Ok(record)
}

/// A Fetch value description into the value the model would return.
fn decode_value(desc: Value) -> Result<Option<Vec<u8>>, StoreFailure> {
    let d = array(desc)?;
    let Some(kind) = d.first() else {
        return Err(StoreFailure::Unexpected("empty value description".into()));
    };
    Ok(match text(kind)? {
        "none" => None,
        "string" => Some(d.get(1).and_then(bytes).map(<[u8]>::to_vec).unwrap_or_default()),
        "hash" => {
            let n = int(d.get(1).unwrap_or(&Value::Nil))?;
            Some(match decode_hash(n, d.get(2..).unwrap_or_default()) {
                Ok(r) => r.encode(),
                Err(_) => b"<hash>".to_vec(),
            })
        }
        "list" | "stream" => Some(b"<log>".to_vec()),
        other => Some(format!("<{other}>").into_bytes()),
    })
}

/// A holder reported by a script that refused to act: it must not be a
/// lease of `ours` (the script would have acted) nor absent (for Claim).
fn check_holder(op: &str, holder: &AgentLookup, ours: u64, absent_ok: bool) -> Result<(), StoreFailure> {
    let bad = match holder {
        AgentLookup::Present(r) => r.incarnation == ours,
        AgentLookup::Absent => !absent_ok,
        AgentLookup::Corrupt(_) => false,
    };
    if bad {
        Err(StoreFailure::Unexpected(format!(
            "{op}: the script refused but the holder decodes as {holder:?}"
        )))
    } else {
        Ok(())
    }
}

/// Milliseconds for PEXPIRE: rounded up (a non-zero TTL never becomes 0), capped.
fn ttl_ms(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
    u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_TTL_MS)
}

/// Stream id `ms-seq` into a cursor (see the module docs).
fn cursor_of(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    if ms > u64::MAX >> SEQ_BITS {
        return None;
    }
    Some(ms << SEQ_BITS | seq.min(SEQ_MAX))
}

/// A cursor into the exclusive start id of the next read. A clamped cursor
/// (sequence `2^20 - 1`) resumes after the whole millisecond.
fn start_id(cursor: u64) -> String {
    let ms = cursor >> SEQ_BITS;
    let seq = cursor & SEQ_MAX;
    if seq == SEQ_MAX {
        format!("{ms}-{}", u64::MAX)
    } else {
        format!("{ms}-{seq}")
    }
}

/// `prefix` with the SCAN glob characters escaped.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

impl RedisStore {
    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Value, StoreFailure> {
        let mut conn = self.conn.clone();
        inv.invoke_async::<Value>(&mut conn).await.map_err(failure)
    }

    async fn delete_matching(&self, patterns: &[String]) -> Result<usize, StoreFailure> {
        let mut conn = self.conn.clone();
        let mut count = 0usize;
        for p in patterns {
            let Some(prefix) = p.strip_suffix('*') else {
                let n: usize = redis::cmd("UNLINK")
                    .arg(p)
                    .query_async(&mut conn)
                    .await
                    .map_err(failure)?;
                count += n;
                continue;
            };
            for batch in self.scan_prefix(prefix).await?.chunks(SCAN_COUNT) {
                let n: usize = redis::cmd("UNLINK")
                    .arg(batch)
                    .query_async(&mut conn)
                    .await
                    .map_err(failure)?;
                count += n;
            }
        }
        Ok(count)
    }

    /// Every key starting with `prefix` (SCAN, never KEYS; bounded rounds).
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Vec<u8>>, StoreFailure> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", escape_glob(prefix));
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        for _ in 0..MAX_SCAN_ROUNDS {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(failure)?;
            found.extend(keys);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
        Err(StoreFailure::Unexpected(format!(
            "SCAN of {pattern:?} did not finish after {MAX_SCAN_ROUNDS} rounds"
        )))
    }

    /// Keys matching `pattern` (a trailing-`*` glob, as [`slimebench_proto::Keys`]
    /// makes), via SCAN: e.g. to check a run left its scope empty.
    ///
    /// # Errors
    /// [`StoreFailure`] when Redis cannot be reached.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, StoreFailure> {
        let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
        let mut keys: Vec<String> = self
            .scan_prefix(prefix)
            .await?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// One look at the stream and the inbox.
    async fn read_once(
        &self,
        stream_key: &str,
        inbox_key: &str,
        cursor: &mut u64,
        max: usize,
    ) -> Result<Vec<Vec<u8>>, StoreFailure> {
        let reply = self
            .run(
                self.scripts
                    .read
                    .key(stream_key)
                    .key(inbox_key)
                    .arg(start_id(*cursor))
                    .arg(max.min(MAX_COUNT)),
            )
            .await?;
        let mut parts = array(reply)?.into_iter();
        let (Some(ids), Some(vals), Some(popped), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(StoreFailure::Unexpected(
                "read reply is not [ids, values, popped]".into(),
            ));
        };
        let ids = array(ids)?;
        let vals = array(vals)?;
        // LPOP of an emptied list answers nil.
        let popped = match popped {
            Value::Nil => Vec::new(),
            other => array(other)?,
        };
        if ids.len() != vals.len() || ids.len() + popped.len() > max {
            return Err(StoreFailure::Unexpected(format!(
                "read reply has {} ids, {} values, {} popped for max {max}",
                ids.len(),
                vals.len(),
                popped.len()
            )));
        }
        let mut out = Vec::with_capacity(ids.len() + popped.len());
        let mut last = *cursor;
        for (id, v) in ids.iter().zip(&vals) {
            let id = text(id)?;
            last = cursor_of(id).ok_or_else(|| StoreFailure::Unexpected(format!("bad stream id {id:?}")))?;
            out.push(bytes(v).unwrap_or_default().to_vec());
        }
        *cursor = last;
        for v in &popped {
            out.push(
                bytes(v)
                    .ok_or_else(|| unexpected("popped entry is not a string", v))?
                    .to_vec(),
            );
        }
        Ok(out)
    }
}

impl ControlStore for RedisStore {
    async fn exec(&self, op: &StoreOp) -> Result<StoreReply, StoreFailure> {
        let s = &self.scripts;
        match op {
            StoreOp::Claim { key, record, ttl } => {
                let reply = self
                    .run(
                        s.claim
                            .key(key)
                            .arg(record.incarnation)
                            .arg(&record.host)
                            .arg(record.pid)
                            .arg(record.wire_version)
                            .arg(ttl_ms(*ttl)),
                    )
                    .await?;
                let (tag, rest) = tagged(reply)?;
                match (tag.as_str(), rest.as_slice()) {
                    ("claimed", []) => Ok(StoreReply::Claimed),
                    ("conflict", [pttl, desc]) => {
                        let pttl = int(pttl)?;
                        let holder = decode_lease(desc.clone())?;
                        check_holder("claim", &holder, record.incarnation, false)?;
                        Ok(StoreReply::Conflict {
                            holder,
                            ttl_left: u64::try_from(pttl).ok().map(Duration::from_millis),
                        })
                    }
                    _ => Err(StoreFailure::Unexpected(format!("claim reply {tag:?}"))),
                }
            }
            StoreOp::Refresh { key, incarnation, ttl } => {
                let reply = self.run(s.refresh.key(key).arg(*incarnation).arg(ttl_ms(*ttl))).await?;
                self.owner_reply("refresh", reply, *incarnation, StoreReply::Refreshed)
            }
            StoreOp::DeleteMatching { patterns } => Ok(StoreReply::Deleted {
                count: self.delete_matching(patterns).await?,
            }),
            StoreOp::PutOwned {
                agent_key,
                incarnation,
                entries,
            } => {
                let mut inv = s.put_owned.key(agent_key);
                inv.arg(*incarnation);
                for (k, v) in entries {
                    inv.key(k).arg(v.as_slice());
                }
                let reply = self.run(&inv).await?;
                self.owner_reply("put_owned", reply, *incarnation, StoreReply::Put)
            }
            StoreOp::Fetch { agent_key, keys } => {
                let mut inv = s.fetch.key(agent_key);
                for k in keys {
                    inv.key(k);
                }
                let mut parts = array(self.run(&inv).await?)?.into_iter();
                let agent = decode_lease(
                    parts
                        .next()
                        .ok_or_else(|| StoreFailure::Unexpected("empty fetch reply".into()))?,
                )?;
                let values = parts.map(decode_value).collect::<Result<Vec<_>, _>>()?;
                if values.len() != keys.len() {
                    return Err(StoreFailure::Unexpected(format!(
                        "fetch returned {} values for {} keys",
                        values.len(),
                        keys.len()
                    )));
                }
                Ok(StoreReply::Fetched { agent, values })
            }
            StoreOp::Append {
                key,
                log,
                value,
                if_alive,
                max_len,
                ttl,
            } => {
                let mut inv = s.append.key(key);
                if let Some(alive) = if_alive {
                    inv.key(alive);
                }
                inv.arg(match log {
                    LogKind::Stream => "stream",
                    LogKind::Queue => "queue",
                })
                .arg(value.as_slice())
                .arg((*max_len).clamp(1, MAX_COUNT))
                .arg(ttl_ms(*ttl))
                .arg(if if_alive.is_some() { "1" } else { "0" });
                let (tag, rest) = tagged(self.run(&inv).await?)?;
                match (tag.as_str(), rest.is_empty()) {
                    ("appended", true) => Ok(StoreReply::Appended),
                    ("skipped", true) => Ok(StoreReply::Skipped),
                    _ => Err(StoreFailure::Unexpected(format!("append reply {tag:?}"))),
                }
            }
            StoreOp::Release {
                agent_key,
                incarnation,
                keys,
            } => {
                let mut inv = s.release.key(agent_key);
                inv.arg(*incarnation);
                for k in keys {
                    inv.key(k);
                }
                let reply = self.run(&inv).await?;
                let n = int(&reply)?;
                Ok(StoreReply::Released {
                    deleted: usize::try_from(n).map_err(|_| unexpected("negative release count", &reply))?,
                })
            }
        }
    }

    async fn read_notifications(
        &self,
        stream_key: &str,
        inbox_key: &str,
        cursor: &mut u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, StoreFailure> {
        let deadline = Instant::now() + wait;
        let polls = (wait.as_millis() / POLL_FIRST.as_millis() + 2).min(MAX_POLLS);
        let mut pause = POLL_FIRST;
        for _ in 0..polls {
            let got = self.read_once(stream_key, inbox_key, cursor, max).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
        Ok(Vec::new())
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

impl RedisStore {
    /// Reply of Refresh / PutOwned: `ok` on success, else `NotOwner`.
    fn owner_reply(
        &self,
        op: &str,
        reply: Value,
        incarnation: u64,
        ok: StoreReply,
    ) -> Result<StoreReply, StoreFailure> {
        let (tag, rest) = tagged(reply)?;
        match (tag.as_str(), rest.as_slice()) {
            ("refreshed" | "put", []) => Ok(ok),
            ("not_owner", [desc]) => {
                let holder = decode_lease(desc.clone())?;
                check_holder(op, &holder, incarnation, true)?;
                Ok(StoreReply::NotOwner { holder })
            }
            _ => Err(StoreFailure::Unexpected(format!("{op} reply {tag:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_mapping_round_trips_and_orders() {
        assert_eq!(cursor_of("0-0"), Some(0));
        assert_eq!(start_id(0), "0-0");
        let c = cursor_of("1732550000123-1023").unwrap();
        assert_eq!(c, 1_732_550_000_123 << 20 | 1023);
        assert_eq!(start_id(c), "1732550000123-1023");
        assert!(cursor_of("5-7").unwrap() < cursor_of("5-8").unwrap());
        assert!(cursor_of("5-999999").unwrap() < cursor_of("6-0").unwrap());
        // Clamped: resumes after the whole millisecond.
        let clamped = cursor_of("9-5000000").unwrap();
        assert_eq!(clamped, 9 << 20 | SEQ_MAX);
        assert_eq!(start_id(clamped), format!("9-{}", u64::MAX));
        assert_eq!(cursor_of("x-1"), None);
        assert_eq!(cursor_of(&format!("{}-0", u64::MAX)), None);
    }

    #[test]
    fn ttl_rounds_up_and_caps() {
        assert_eq!(ttl_ms(Duration::ZERO), 0);
        assert_eq!(ttl_ms(Duration::from_micros(1)), 1);
        assert_eq!(ttl_ms(Duration::from_millis(150)), 150);
        assert_eq!(ttl_ms(Duration::from_secs(u64::MAX)), MAX_TTL_MS);
    }

    #[test]
    fn glob_escaping() {
        assert_eq!(escape_glob("s:exchange:a:"), "s:exchange:a:");
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    fn hash(fields: [Option<&str>; 4]) -> Value {
        let mut v = vec![
            Value::BulkString(b"hash".to_vec()),
            Value::Int(fields.iter().filter(|f| f.is_some()).count() as i64),
        ];
        v.extend(
            fields
                .iter()
                .map(|f| f.map_or(Value::Nil, |s| Value::BulkString(s.as_bytes().to_vec()))),
        );
        Value::Array(v)
    }

    #[test]
    fn lease_hash_decoding_is_strict() {
        let ok = decode_lease(hash([Some("7"), Some("h"), Some("12"), Some("1")])).unwrap();
        assert_eq!(
            ok,
            AgentLookup::Present(AgentRecord {
                incarnation: 7,
                host: "h".into(),
                pid: 12,
                wire_version: 1
            })
        );
        for bad in [
            [Some("0"), Some("h"), Some("1"), Some("1")],
            [Some("07"), Some("h"), Some("1"), Some("1")],
            [Some("+7"), Some("h"), Some("1"), Some("1")],
            [Some("7"), Some("h"), Some("4294967296"), Some("1")],
            [Some("18446744073709551616"), Some("h"), Some("1"), Some("1")],
            [Some("7"), None, Some("1"), Some("1")],
        ] {
            assert!(
                matches!(decode_lease(hash(bad)).unwrap(), AgentLookup::Corrupt(_)),
                "{bad:?}"
            );
        }
        let garbage = Value::Array(vec![
            Value::BulkString(b"string".to_vec()),
            Value::Int(3),
            Value::BulkString(b"xyz".to_vec()),
        ]);
        assert!(matches!(decode_lease(garbage).unwrap(), AgentLookup::Corrupt(_)));
    }
}
