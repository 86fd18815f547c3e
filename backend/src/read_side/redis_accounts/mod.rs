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

mod projection;
mod scripts;
mod stored;

use std::time::Duration;

use eventstore::Position;
use eventstore::projection::StoredCheckpoint;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use rust_decimal::Decimal;
use uuid::Uuid;

use bank::contract::AccountView;
use scripts::{FIELDS, READ_ACCOUNTS, READ_HIGHEST};
use stored::{StoredAccount, parse_checkpoint, sortable_cents};

pub const PROJECTION_NAME: &str = "redis_accounts";

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
pub struct RedisRead<T> {
    /// `None`: the store holds no checkpoint (never built, or emptied). Its history
    /// ([`eventstore::LogIdentity`]) is [`eventstore::projection::CLEARING_LOG`] while it is
    /// being cleared.
    pub checkpoint: Option<StoredCheckpoint>,
    /// A rebuild has not yet brought the store back to where it was.
    pub rebuilding: bool,
    pub value: T,
}

impl<T> RedisRead<T> {
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
    pub async fn account(&self, account_id: Uuid) -> Result<RedisRead<Option<AccountView>>, RedisReadError> {
        let mut script = READ_ACCOUNTS.prepare_invoke();
        script.key(self.keys.projection()).key(self.keys.account(account_id)).arg(fields_json());
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (checkpoint, rebuilding, rows) = split_reply(answer)?;
        let as_of = checkpoint.as_ref().map_or(Position::START, |checkpoint| checkpoint.at.position);
        let account = match rows.first() {
            Some(values) => StoredAccount::parse(values)?,
            None => None,
        };
        Ok(RedisRead { value: account.map(|account| account.into_view(account_id, as_of)), checkpoint, rebuilding })
    }

    /// The accounts holding at least `min_balance` (whole cents), highest first, then by id; at
    /// most `limit`; with `owner_id`, only that owner's.
    pub async fn highest(
        &self,
        min_balance: Decimal,
        owner_id: Option<&str>,
        limit: i64,
    ) -> Result<RedisRead<Vec<AccountView>>, RedisReadError> {
        let lowest = sortable_cents(min_balance)
            .ok_or_else(|| RedisReadError::Unreadable(format!("a minimum balance of {min_balance}")))?;
        let set = owner_id.map_or_else(|| self.keys.balances(), |owner| self.keys.owner_balances(owner));
        let mut script = READ_HIGHEST.prepare_invoke();
        script.key(self.keys.projection()).key(set);
        script.arg(fields_json()).arg(lowest).arg(limit).arg(self.keys.account_prefix());
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (checkpoint, rebuilding, rows) = split_reply(answer)?;
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
        Ok(RedisRead { checkpoint, rebuilding, value: accounts })
    }

    /// Where the store is: its checkpoint, and whether it is rebuilding.
    pub async fn progress(&self) -> Result<RedisRead<()>, RedisReadError> {
        let mut script = READ_ACCOUNTS.prepare_invoke();
        script.key(self.keys.projection()).arg(fields_json());
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (checkpoint, rebuilding, _) = split_reply(answer)?;
        Ok(RedisRead { checkpoint, rebuilding, value: () })
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
        let (as_of, _, rows) = split_reply(answer)?;
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
fn split_reply(answer: Vec<Value>) -> Result<(Option<StoredCheckpoint>, bool, Rows), RedisReadError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
