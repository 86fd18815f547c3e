//! The `redis_accounts` projection: the design's second read store, the accounts' read model in
//! Redis, for the account and high-value queries.
//!
//! Keys, under a prefix of their own (`REDIS_KEY_PREFIX`):
//! - `projection`: a hash with the checkpoint (`<log>@<transaction>:<position>@<event>`: the
//!   history of the log it was built from, [`eventstore::LogIdentity`], the position and the
//!   event there) and `rebuilding`.
//! - `fence`: `<epoch>@<log>`, the highest leader epoch that wrote or cleared the store, in that
//!   history: epochs start again in another (a database made anew), whose leaders it must not
//!   refuse.
//! - `account:<id>`: a hash with the read model's fields (those of `account_summary`).
//! - `balances` and `owner:<owner>:balances`: sorted sets of every account (and each owner's)
//!   by balance. Their scores are all 0 and the order is in the member,
//!   `<balance in cents, 21 digits>:<id with every hex digit inverted>:<id>`: a score is a
//!   double, which cannot hold every balance exactly (beyond 2^53 cents two balances would tie
//!   or swap), while members sort by their bytes — highest balance first, then lowest id, as the
//!   Postgres query orders them.
//!
//! A batch is folded in memory (as for `account_summary`), the rows it changes are read with the
//! checkpoint (one script, atomic), their new values computed here — Lua's numbers are doubles,
//! and money is never a double — and written with the checkpoint's move by one script that does
//! nothing unless the checkpoint is still the one they were read at. See
//! [`eventstore::projection::ExternalProjection`] for why that makes each batch count once.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use eventstore::projection::{
    CompareAndSet, ExternalBatch, ExternalError, ExternalProjection, LogPlace, StoredCheckpoint,
};
use eventstore::{ApplyError, Position};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};
use rust_decimal::Decimal;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::account_summary::{Change, NewRow, fold};
use bank::contract::AccountStatusView;
use bank::contract::{AccountView, ServedBy};
use bank::domain::{AccountEvent, AccountStatus, Reason};

pub const PROJECTION_NAME: &str = "redis_accounts";

/// The fields of an account's hash, in the order the scripts read and write them.
const FIELDS: [&str; 11] = [
    "owner_id",
    "balance",
    "deposits",
    "withdrawals",
    "count",
    "last_transaction",
    "created_at",
    "version",
    "position",
    // Absent from hashes written before accounts had a status: those are active.
    "status",
    "status_reason",
];

/// Reads the checkpoint, whether a rebuild is under way, and the accounts whose hashes are
/// `KEYS[2..]`, in one atomic step.
static READ_ACCOUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local answer = {redis.call('HGET', KEYS[1], 'checkpoint'), redis.call('HGET', KEYS[1], 'rebuilding')}
for i = 2, #KEYS do
  answer[#answer + 1] = redis.call('HMGET', KEYS[i], unpack(cjson.decode(ARGV[1])))
end
return answer
",
    )
});

/// As [`READ_ACCOUNTS`](static@READ_ACCOUNTS), for the accounts of the sorted set `KEYS[2]` whose members sort at or
/// above `ARGV[2]`, highest first, at most `ARGV[3]` of them; each row starts with its id.
/// The account hashes are named from the members (`ARGV[4]` is their key prefix): a script that
/// reads keys it was not given works on one Redis server, not across a cluster.
static READ_HIGHEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local answer = {redis.call('HGET', KEYS[1], 'checkpoint'), redis.call('HGET', KEYS[1], 'rebuilding')}
local fields = cjson.decode(ARGV[1])
local members = redis.call('ZREVRANGEBYLEX', KEYS[2], '+', '[' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(members) do
  local id = string.sub(member, -36)
  local row = redis.call('HMGET', ARGV[4] .. id, unpack(fields))
  table.insert(row, 1, id)
  answer[#answer + 1] = row
end
return answer
",
    )
});

/// Lua: whether the fence `KEYS[fence]` refuses a leader of `epoch` in the history `log`: it
/// holds a higher epoch of the same history. A fence of another history (or of the older form,
/// a bare number) refuses nobody.
const FENCE_REFUSES: &str = r"
local function fence_refuses(fence_key, epoch, log)
  local fence = redis.call('GET', fence_key)
  if not fence then
    return false
  end
  local fenced_epoch, fenced_log = string.match(fence, '^(%d+)@(.*)$')
  return fenced_log == log and tonumber(epoch) < tonumber(fenced_epoch)
end
";

/// Applies a batch if the checkpoint is still `ARGV[1]` (empty: none) and no later leader of
/// this history (`ARGV[6]`) has written (`ARGV[5]`, the leader's epoch, is not below the fence),
/// moving the checkpoint to `ARGV[2]`; returns 1, or 0 having written nothing, or -1 having
/// written nothing because a key holds another type (a script that failed part-way would keep
/// what it had written). `KEYS[1]`: the projection's hash, `KEYS[2]`: every account's balances,
/// `KEYS[3]`: the fence; then per account its hash and its owner's balances. `ARGV[7..]`: per
/// account its old member (empty for a new account), its new member and its fields' values.
static APPLY_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            FENCE_REFUSES,
            r"
local stored = redis.call('HGET', KEYS[1], 'checkpoint') or ''
if stored ~= ARGV[1] then
  return 0
end
if fence_refuses(KEYS[3], ARGV[5], ARGV[6]) then
  return 0
end
local function holds(key, kind)
  local found = redis.call('TYPE', key).ok
  return found == 'none' or found == kind
end
if not holds(KEYS[2], 'zset') then
  return -1
end
for i = 4, #KEYS, 2 do
  if not holds(KEYS[i], 'hash') or not holds(KEYS[i + 1], 'zset') then
    return -1
  end
end
local fields = cjson.decode(ARGV[4])
local stride = 2 + #fields
for i = 0, (#KEYS - 3) / 2 - 1 do
  local account, owner_balances = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local at = 7 + stride * i
  local old, new = ARGV[at], ARGV[at + 1]
  local pairs = {}
  for f = 1, #fields do
    pairs[#pairs + 1] = fields[f]
    pairs[#pairs + 1] = ARGV[at + 1 + f]
  end
  redis.call('HSET', account, unpack(pairs))
  if old ~= '' then
    redis.call('ZREM', KEYS[2], old)
    redis.call('ZREM', owner_balances, old)
  end
  redis.call('ZADD', KEYS[2], 0, new)
  redis.call('ZADD', owner_balances, 0, new)
end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2], 'rebuilding', ARGV[3])
redis.call('SET', KEYS[3], ARGV[5] .. '@' .. ARGV[6])
return 1
",
        ]
        .concat(),
    )
});

/// The checkpoint while the store is being cleared: of no history, so that no batch applies to
/// it, no query reads it, and a clear that stopped half-way is noticed and done again.
static CLEARING: LazyLock<String> =
    LazyLock::new(|| checkpoint_text(eventstore::projection::CLEARING_LOG, LogPlace::START));

/// Starts a clear: raises the fence to `ARGV[1]` of the history `ARGV[3]` (unless a later
/// leader of that history has written: then 0) and puts [`CLEARING`] in the checkpoint's place.
/// `KEYS[1]`: the projection's hash, `KEYS[2]`: the fence.
static BEGIN_CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            FENCE_REFUSES,
            r"
if fence_refuses(KEYS[2], ARGV[1], ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1] .. '@' .. ARGV[3])
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2], 'rebuilding', '1')
return 1
",
        ]
        .concat(),
    )
});

/// Removes the next keys of a `SCAN` (cursor `ARGV[1]`, pattern `ARGV[2]`) but the projection's
/// hash and the fence, and returns the next cursor — unless the checkpoint is no longer
/// [`CLEARING`](static@CLEARING) (`ARGV[3]`): someone finished the clear and began to build anew, so it removes
/// nothing and answers nil. A former leader waking mid-way cannot delete its successor's work.
static CLEAR_SOME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'checkpoint') ~= ARGV[3] then
  return false
end
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', 1000)
for _, key in ipairs(found[2]) do
  if key ~= KEYS[1] and key ~= KEYS[2] then
    redis.call('UNLINK', key)
  end
end
return found[1]
",
    )
});

/// Ends a clear: the store holds nothing, not even a checkpoint, if it is still
/// [`CLEARING`](static@CLEARING).
static END_CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'checkpoint') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
",
    )
});

/// How long one Redis request may take before it counts as failed: a query then falls back to
/// Postgres, a batch is tried again.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The accounts' read model in Redis: the projection that writes it and the reads the queries
/// make of it.
#[derive(Clone)]
pub struct RedisAccounts {
    redis: ConnectionManager,
    keys: Keys,
    /// What [`RedisAccounts::may_evict`] found last, and when.
    eviction: std::sync::Arc<std::sync::Mutex<Option<EvictionCheck>>>,
}

/// When Redis's memory settings were read, and the risk they showed, if any.
type EvictionCheck = (std::time::Instant, Option<String>);

/// How often [`RedisAccounts::may_evict`] asks Redis again.
const EVICTION_CHECK: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn projection(&self) -> String {
        format!("{}projection", self.prefix)
    }

    fn account_prefix(&self) -> String {
        format!("{}account:", self.prefix)
    }

    fn account(&self, id: Uuid) -> String {
        format!("{}account:{id}", self.prefix)
    }

    fn balances(&self) -> String {
        format!("{}balances", self.prefix)
    }

    /// The highest leader epoch that wrote or cleared the store.
    fn fence(&self) -> String {
        format!("{}fence", self.prefix)
    }

    fn owner_balances(&self, owner: &str) -> String {
        format!("{}owner:{owner}:balances", self.prefix)
    }
}

/// What the read store said, with the checkpoint it said it at.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisAnswer<T> {
    /// `None`: the store holds no checkpoint (never built, or emptied). Its history
    /// ([`eventstore::LogIdentity`]) is [`eventstore::projection::CLEARING_LOG`] while it is
    /// being cleared.
    pub checkpoint: Option<StoredCheckpoint>,
    /// A rebuild has not yet brought the store back to where it was.
    pub rebuilding: bool,
    pub value: T,
}

impl<T> RedisAnswer<T> {
    /// The position the answer is current as of.
    pub fn as_of(&self) -> Option<Position> {
        self.checkpoint.as_ref().map(|checkpoint| checkpoint.at.position)
    }
}

/// The read store cannot answer: unreachable, timed out, or holding what this code did not write.
#[derive(Debug, thiserror::Error)]
pub enum RedisReadError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("the read store holds an unreadable value: {0}")]
    Unreadable(String),
}

/// One account's hash, parsed.
#[derive(Debug, Clone, PartialEq)]
struct StoredAccount {
    owner_id: String,
    balance: Decimal,
    deposits: Decimal,
    withdrawals: Decimal,
    count: i64,
    last_transaction: OffsetDateTime,
    created_at: OffsetDateTime,
    version: i64,
    position: i64,
    status: AccountStatus,
}

impl StoredAccount {
    fn opened(row: &NewRow) -> StoredAccount {
        StoredAccount {
            owner_id: row.owner_id.clone(),
            balance: row.balance,
            deposits: row.deposits,
            withdrawals: row.withdrawals,
            count: row.count,
            last_transaction: row.last_transaction,
            created_at: row.created_at,
            version: row.version,
            position: row.position,
            status: row.status.clone(),
        }
    }

    fn changed(&self, change: &Change) -> StoredAccount {
        StoredAccount {
            owner_id: self.owner_id.clone(),
            balance: self.balance + change.deposits - change.withdrawals,
            deposits: self.deposits + change.deposits,
            withdrawals: self.withdrawals + change.withdrawals,
            count: self.count + change.count,
            last_transaction: change.last_transaction,
            created_at: self.created_at,
            version: change.version,
            position: change.position,
            status: change.status_after(self.status.clone()),
        }
    }

    fn values(&self) -> Result<[String; 11], time::error::Format> {
        Ok([
            self.owner_id.clone(),
            self.balance.to_string(),
            self.deposits.to_string(),
            self.withdrawals.to_string(),
            self.count.to_string(),
            self.last_transaction.format(&Rfc3339)?,
            self.created_at.format(&Rfc3339)?,
            self.version.to_string(),
            self.position.to_string(),
            self.status.as_str().to_owned(),
            self.status.reason().map(|reason| reason.to_string()).unwrap_or_default(),
        ])
    }

    /// `None` for a hash that does not exist (every field missing).
    fn parse(values: &[Option<String>]) -> Result<Option<StoredAccount>, RedisReadError> {
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let field = |index: usize| -> Result<&str, RedisReadError> {
            values
                .get(index)
                .and_then(Option::as_deref)
                .ok_or_else(|| RedisReadError::Unreadable(format!("an account without {}", FIELDS[index])))
        };
        fn parsed<T: FromStr>(text: &str, name: &str) -> Result<T, RedisReadError> {
            text.parse().map_err(|_| RedisReadError::Unreadable(format!("{name} {text:?}")))
        }
        let time = |index: usize| -> Result<OffsetDateTime, RedisReadError> {
            let text = field(index)?;
            OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| RedisReadError::Unreadable(format!("{} {text:?}", FIELDS[index])))
        };
        Ok(Some(StoredAccount {
            owner_id: field(0)?.to_owned(),
            balance: parsed(field(1)?, FIELDS[1])?,
            deposits: parsed(field(2)?, FIELDS[2])?,
            withdrawals: parsed(field(3)?, FIELDS[3])?,
            count: parsed(field(4)?, FIELDS[4])?,
            last_transaction: time(5)?,
            created_at: time(6)?,
            version: parsed(field(7)?, FIELDS[7])?,
            position: parsed(field(8)?, FIELDS[8])?,
            status: Self::parse_status(values)?,
        }))
    }

    fn parse_status(values: &[Option<String>]) -> Result<AccountStatus, RedisReadError> {
        let optional = |index: usize| values.get(index).and_then(Option::as_deref);
        match optional(9).unwrap_or("active") {
            "active" => Ok(AccountStatus::Active),
            "closed" => Ok(AccountStatus::Closed),
            "frozen" => {
                let reason = optional(10).unwrap_or_default();
                Reason::parse(reason)
                    .map(|reason| AccountStatus::Frozen { reason })
                    .map_err(|_| RedisReadError::Unreadable(format!("status_reason {reason:?}")))
            }
            other => Err(RedisReadError::Unreadable(format!("status {other:?}"))),
        }
    }

    fn into_view(self, account_id: Uuid, as_of: Position) -> AccountView {
        AccountView {
            account_id,
            owner_id: self.owner_id,
            current_balance: self.balance,
            total_deposits: self.deposits,
            total_withdrawals: self.withdrawals,
            transaction_count: self.count,
            last_transaction: self.last_transaction,
            created_at: self.created_at,
            version: self.version,
            as_of,
            stale: false,
            served_by: ServedBy::Redis,
            status: AccountStatusView::parse(self.status.as_str()).unwrap_or_default(),
            status_reason: self.status.reason().map(|reason| reason.to_string()),
        }
    }
}

/// The sorted sets' member for an account: see the module's documentation. `None` for a
/// balance the sets cannot order (negative, or finer than a cent), which no event can make.
fn balance_member(balance: Decimal, account_id: Uuid) -> Option<String> {
    Some(format!("{}:{}:{account_id}", sortable_cents(balance)?, inverted(account_id)))
}

/// The balance in whole cents, as 21 digits (the largest balance has 20).
fn sortable_cents(balance: Decimal) -> Option<String> {
    let cents = balance.checked_mul(Decimal::ONE_HUNDRED)?;
    if cents < Decimal::ZERO || !cents.fract().is_zero() {
        return None;
    }
    let digits = cents.trunc().normalize().to_string();
    (digits.len() <= 21).then(|| format!("{digits:0>21}"))
}

/// The id's hex digits, each replaced by 15 minus it: sorting these downwards sorts ids upwards.
fn inverted(account_id: Uuid) -> String {
    account_id
        .simple()
        .to_string()
        .chars()
        .map(|digit| {
            let value = digit.to_digit(16).expect("a uuid's simple form is hex");
            char::from_digit(15 - value, 16).expect("0..=15 is a hex digit")
        })
        .collect()
}

impl RedisAccounts {
    /// The read store at `url`, under `prefix`. Connects on first use, and again after any
    /// failure, so that the server starts and serves (from Postgres) without Redis.
    pub fn new(url: &str, prefix: &str) -> Result<RedisAccounts, RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisAccounts { redis, keys: Keys { prefix: prefix.to_owned() }, eviction: Default::default() })
    }

    /// Why Redis may drop the store's keys, if it may: a `maxmemory` with a policy other than
    /// `noeviction` lets Redis evict any key under memory pressure — the balances index, or an
    /// account's hash — and the store would answer without them. Asked at most once a minute
    /// (`INFO memory`, which managed Redis services allow where `CONFIG` is not); an unreadable
    /// answer counts as a risk.
    ///
    /// # Cancel safety
    ///
    /// Cancelled, it finds out again on the next call.
    pub async fn may_evict(&self) -> Option<String> {
        if let Some((at, found)) = self.eviction.lock().expect("never poisoned").as_ref()
            && at.elapsed() < EVICTION_CHECK
        {
            return found.clone();
        }
        let info: Result<String, RedisError> =
            redis::cmd("INFO").arg("memory").query_async(&mut self.redis.clone()).await;
        // Unreachable: no query reads it anyway; asked again a minute later.
        let found = info.ok().and_then(|info| eviction_risk(&info));
        if let Some(why) = &found {
            tracing::warn!(why, "the Redis read store is not read from");
        }
        *self.eviction.lock().expect("never poisoned") = Some((std::time::Instant::now(), found.clone()));
        found
    }

    /// The account, as the store has it.
    pub async fn account(&self, account_id: Uuid) -> Result<RedisAnswer<Option<AccountView>>, RedisReadError> {
        let mut script = READ_ACCOUNTS.prepare_invoke();
        script.key(self.keys.projection()).key(self.keys.account(account_id)).arg(fields_json());
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (checkpoint, rebuilding, rows) = split_answer(answer)?;
        let as_of = checkpoint.as_ref().map_or(Position::START, |checkpoint| checkpoint.at.position);
        let account = match rows.first() {
            Some(values) => StoredAccount::parse(values)?,
            None => None,
        };
        Ok(RedisAnswer { value: account.map(|account| account.into_view(account_id, as_of)), checkpoint, rebuilding })
    }

    /// The accounts holding at least `min_balance` (whole cents), highest first, then by id; at
    /// most `limit`; with `owner_id`, only that owner's.
    pub async fn highest(
        &self,
        min_balance: Decimal,
        owner_id: Option<&str>,
        limit: i64,
    ) -> Result<RedisAnswer<Vec<AccountView>>, RedisReadError> {
        let lowest = sortable_cents(min_balance)
            .ok_or_else(|| RedisReadError::Unreadable(format!("a minimum balance of {min_balance}")))?;
        let set = owner_id.map_or_else(|| self.keys.balances(), |owner| self.keys.owner_balances(owner));
        let mut script = READ_HIGHEST.prepare_invoke();
        script.key(self.keys.projection()).key(set);
        script.arg(fields_json()).arg(lowest).arg(limit).arg(self.keys.account_prefix());
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (checkpoint, rebuilding, rows) = split_answer(answer)?;
        let at = checkpoint.as_ref().map_or(Position::START, |checkpoint| checkpoint.at.position);
        let mut accounts = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, values) = row.split_first().ok_or_else(|| RedisReadError::Unreadable("an empty row".into()))?;
            let id = id.as_deref().and_then(|id| Uuid::parse_str(id).ok());
            let id = id.ok_or_else(|| RedisReadError::Unreadable(format!("a balance member {row:?}")))?;
            // A member without its hash cannot be written by the script (both move together).
            let account = StoredAccount::parse(values)?
                .ok_or_else(|| RedisReadError::Unreadable(format!("account {id} is ranked but not stored")))?;
            accounts.push(account.into_view(id, at));
        }
        Ok(RedisAnswer { checkpoint, rebuilding, value: accounts })
    }

    /// Where the store is: its checkpoint, and whether it is rebuilding.
    pub async fn progress(&self) -> Result<RedisAnswer<()>, RedisReadError> {
        let mut script = READ_ACCOUNTS.prepare_invoke();
        script.key(self.keys.projection()).arg(fields_json());
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (checkpoint, rebuilding, _) = split_answer(answer)?;
        Ok(RedisAnswer { checkpoint, rebuilding, value: () })
    }

    /// The stored rows of `ids` (in order) with the checkpoint they are current as of.
    async fn rows(
        &self,
        ids: &[Uuid],
    ) -> Result<(Option<StoredCheckpoint>, Vec<Option<StoredAccount>>), RedisReadError> {
        let mut script = READ_ACCOUNTS.prepare_invoke();
        script.key(self.keys.projection()).arg(fields_json());
        for id in ids {
            script.key(self.keys.account(*id));
        }
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (as_of, _, rows) = split_answer(answer)?;
        let rows = rows.iter().map(|values| StoredAccount::parse(values)).collect::<Result<_, _>>()?;
        Ok((as_of, rows))
    }
}

/// Why the memory settings `INFO memory` reports let Redis evict keys, if they do.
fn eviction_risk(info: &str) -> Option<String> {
    let field = |name: &str| {
        info.lines().find_map(|line| line.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
    };
    let (Some(limit), Some(policy)) = (field("maxmemory"), field("maxmemory_policy")) else {
        return Some("Redis did not say how it evicts keys (INFO memory)".to_owned());
    };
    (limit != "0" && policy != "noeviction").then(|| {
        format!(
            "Redis may evict the store's keys (maxmemory {limit}, maxmemory-policy {policy}): queries read Postgres; \
             set maxmemory-policy noeviction"
        )
    })
}

fn fields_json() -> String {
    serde_json::to_string(&FIELDS).expect("a list of strings serializes")
}

type Rows = Vec<Vec<Option<String>>>;

/// A read script's answer: the checkpoint, whether a rebuild is under way, the rows.
fn split_answer(answer: Vec<Value>) -> Result<(Option<StoredCheckpoint>, bool, Rows), RedisReadError> {
    let mut values = answer.into_iter();
    let text = |value: Option<Value>| -> Result<Option<String>, RedisReadError> {
        redis::from_redis_value(value.unwrap_or(Value::Nil))
            .map_err(|error| RedisReadError::Unreadable(error.to_string()))
    };
    let as_of = text(values.next())?
        .map(|checkpoint| {
            parse_checkpoint(&checkpoint)
                .ok_or_else(|| RedisReadError::Unreadable(format!("checkpoint {checkpoint:?}")))
        })
        .transpose()?;
    let rebuilding = text(values.next())?.as_deref() == Some("1");
    let rows = values
        .map(|row| redis::from_redis_value(row).map_err(|error| RedisReadError::Unreadable(error.to_string())))
        .collect::<Result<Rows, _>>()?;
    Ok((as_of, rebuilding, rows))
}

/// `<log>@<transaction>:<position>@<event>` (`-` for no event).
fn checkpoint_text(log: &str, at: LogPlace) -> String {
    let event = at.event.map_or_else(|| "-".to_owned(), |event| event.to_string());
    format!("{log}@{}@{event}", at.position)
}

/// A checkpoint as [`checkpoint_text`] writes it. One written by older code, without an event,
/// reads as of its history with none: that history is not this one's, and the store is rebuilt.
fn parse_checkpoint(text: &str) -> Option<StoredCheckpoint> {
    let (log, rest) = text.split_once('@')?;
    let (position, event) = match rest.split_once('@') {
        Some((position, "-")) => (position, None),
        Some((position, event)) => (position, Some(event.parse().ok()?)),
        None => (rest, None),
    };
    Some(StoredCheckpoint { log: log.to_owned(), at: LogPlace { position: position.parse().ok()?, event } })
}

fn store_error(error: impl std::error::Error + Send + Sync + 'static) -> ExternalError {
    ExternalError::Store(Box::new(error))
}

impl ExternalProjection for RedisAccounts {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    fn event_types(&self) -> &'static [&'static str] {
        AccountEvent::TYPES
    }

    async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, ExternalError> {
        Ok(self.rows(&[]).await.map_err(store_error)?.0)
    }

    async fn apply(&self, batch: &ExternalBatch<'_>) -> Result<CompareAndSet, ExternalError> {
        let folded = fold(batch.events).map_err(|error| match error {
            ApplyError::Event { position, reason } => ExternalError::Event { position, reason },
            ApplyError::Database(error) => store_error(error),
        })?;
        let changed: Vec<Uuid> = folded.changes.iter().map(|change| change.account_id).collect();
        let (as_of, stored) = self.rows(&changed).await.map_err(store_error)?;
        if as_of != batch.from.map(|from| StoredCheckpoint { log: batch.log.to_owned(), at: from }) {
            return Ok(CompareAndSet::CheckpointMoved);
        }
        // (id, its member before the batch if it existed, its row after).
        let mut writes: Vec<(Uuid, Option<StoredAccount>, StoredAccount)> =
            folded.new_rows.iter().map(|row| (row.account_id, None, StoredAccount::opened(row))).collect();
        for (change, stored) in folded.changes.iter().zip(stored) {
            let Some(stored) = stored else {
                // The store's checkpoint is past the account's opening, but its hash is gone: an
                // eviction, or someone's DEL. The store is rebuilt (see `may_evict`).
                return Err(ExternalError::Lost(format!(
                    "account {} changes at {} but the store no longer holds it",
                    change.account_id, change.first_event
                )));
            };
            let changed = stored.changed(change);
            writes.push((change.account_id, Some(stored), changed));
        }
        let mut script = APPLY_BATCH.prepare_invoke();
        script.key(self.keys.projection()).key(self.keys.balances()).key(self.keys.fence());
        let from = batch.from.map(|from| checkpoint_text(batch.log, from)).unwrap_or_default();
        script
            .arg(from)
            .arg(checkpoint_text(batch.log, batch.to))
            .arg(if batch.rebuilding { "1" } else { "0" })
            .arg(fields_json())
            .arg(batch.epoch)
            .arg(batch.log);
        for (id, before, after) in &writes {
            let member = |account: &StoredAccount| {
                balance_member(account.balance, *id).ok_or_else(|| {
                    let reason = format!("account {id}'s balance {} cannot be ranked", account.balance);
                    // No event makes such a balance (the domain refuses them): stop at the batch.
                    let position = batch.events.first().map_or(batch.to.position, |event| event.position());
                    ExternalError::Event { position, reason: reason.into() }
                })
            };
            script.key(self.keys.account(*id)).key(self.keys.owner_balances(&after.owner_id));
            script.arg(before.as_ref().map(member).transpose()?.unwrap_or_default()).arg(member(after)?);
            for value in after.values().map_err(store_error)? {
                script.arg(value);
            }
        }
        let applied: i64 = script.invoke_async(&mut self.redis.clone()).await.map_err(store_error)?;
        match applied {
            1 => Ok(CompareAndSet::Applied),
            0 => Ok(CompareAndSet::CheckpointMoved),
            _ => Err(store_error(RedisReadError::Unreadable(format!(
                "a key under {:?} holds another type than the projection writes there",
                self.keys.prefix
            )))),
        }
    }

    async fn warning(&self) -> Option<String> {
        self.may_evict().await
    }

    async fn clear(&self, epoch: i64, log: &str) -> Result<(), ExternalError> {
        let mut redis = self.redis.clone();
        let mut begin = BEGIN_CLEAR.prepare_invoke();
        begin.key(self.keys.projection()).key(self.keys.fence()).arg(epoch).arg(CLEARING.as_str()).arg(log);
        let begun: i64 = begin.invoke_async(&mut redis).await.map_err(store_error)?;
        if begun == 0 {
            // A later leader of this history has written: the store is theirs, and this one
            // must say so (its status), not go on as if it had cleared.
            return Err(ExternalError::Store(
                format!("the store's fence refuses epoch {epoch}: a later leader has written").into(),
            ));
        }
        let pattern = format!("{}*", self.keys.prefix);
        let mut cursor = "0".to_owned();
        loop {
            let mut script = CLEAR_SOME.prepare_invoke();
            script.key(self.keys.projection()).key(self.keys.fence()).arg(&cursor).arg(&pattern).arg(CLEARING.as_str());
            let next: Option<String> = script.invoke_async(&mut redis).await.map_err(store_error)?;
            match next {
                // Someone else finished the clear and builds the store again: what is left is theirs.
                None => return Ok(()),
                Some(next) if next == "0" => break,
                Some(next) => cursor = next,
            }
        }
        let mut end = END_CLEAR.prepare_invoke();
        end.key(self.keys.projection()).arg(CLEARING.as_str());
        end.invoke_async::<i64>(&mut redis).await.map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;

    #[test]
    fn members_sort_by_balance_then_by_id_as_postgres_orders_them() {
        let low = Uuid::parse_str("00000000-0000-0000-0000-000000000001").unwrap();
        let high = Uuid::parse_str("ffffffff-0000-0000-0000-000000000000").unwrap();
        let mut members = [
            balance_member(dec!(10.5), high).unwrap(),
            balance_member(dec!(999999999999999999.99), high).unwrap(),
            balance_member(dec!(10.50), low).unwrap(),
            balance_member(dec!(9.99), low).unwrap(),
            balance_member(dec!(0), low).unwrap(),
            balance_member(dec!(100), low).unwrap(),
        ];
        // Highest first, as ZREVRANGEBYLEX reads them.
        members.sort_by(|a, b| b.cmp(a));
        let order: Vec<(String, Uuid)> =
            members.iter().map(|m| (m[..21].to_owned(), Uuid::parse_str(&m[m.len() - 36..]).unwrap())).collect();
        assert_eq!(
            order,
            vec![
                ("099999999999999999999".to_owned(), high),
                ("000000000000000010000".to_owned(), low),
                ("000000000000000001050".to_owned(), low),
                ("000000000000000001050".to_owned(), high),
                ("000000000000000000999".to_owned(), low),
                ("000000000000000000000".to_owned(), low),
            ]
        );
    }

    #[test]
    fn only_a_memory_limit_without_noeviction_puts_keys_at_risk() {
        let info = |limit: &str, policy: &str| {
            format!(
                "# Memory\r\nused_memory:1\r\nmaxmemory:{limit}\r\nmaxmemory_human:x\r\nmaxmemory_policy:{policy}\r\n"
            )
        };
        assert_eq!(eviction_risk(&info("0", "allkeys-lru")), None, "no limit: nothing is evicted");
        assert_eq!(eviction_risk(&info("104857600", "noeviction")), None);
        assert!(eviction_risk(&info("104857600", "allkeys-lru")).is_some_and(|why| why.contains("allkeys-lru")));
        assert!(eviction_risk(&info("104857600", "volatile-lru")).is_some());
        assert!(eviction_risk("# Memory\r\n").is_some(), "unreadable: at risk");
    }

    #[test]
    fn checkpoints_round_trip_and_an_older_one_reads_as_of_its_history_with_no_event() {
        let at = LogPlace {
            position: Position { transaction_id: 812, global_position: 3 },
            event: Some(Uuid::from_u128(9)),
        };
        let text = checkpoint_text("7.1.16384.00000000-0000-0000-0000-000000000001", at);
        assert_eq!(
            parse_checkpoint(&text),
            Some(StoredCheckpoint { log: "7.1.16384.00000000-0000-0000-0000-000000000001".into(), at })
        );
        let older = parse_checkpoint("00000000-0000-0000-0000-000000000001@812:3").unwrap();
        assert_eq!((older.log.as_str(), older.at.event), ("00000000-0000-0000-0000-000000000001", None));
        assert_eq!(parse_checkpoint(&CLEARING).unwrap().log, eventstore::projection::CLEARING_LOG);
    }

    #[test]
    fn balances_finer_than_a_cent_or_negative_cannot_be_ranked() {
        assert_eq!(sortable_cents(dec!(0.001)), None);
        assert_eq!(sortable_cents(dec!(-1)), None);
        assert_eq!(sortable_cents(dec!(1.000)).as_deref(), Some("000000000000000000100"));
    }
}
