//! The `redis_accounts` projection: the design's second read store, the accounts' read model in
//! Redis, for the account and high-value queries.
//!
//! The store is split as the Postgres read model is (`PROJECTION_PARTITIONS`): each partition's
//! keys carry its hash tag after the prefix (`REDIS_KEY_PREFIX`), `{p<k>-of-<n>}:`, so that on a
//! Redis Cluster a partition is one slot, where each script may read and write its keys
//! together, and the partitions spread over the masters. (The count is in the tag: a new count
//! starts from empty partitions, never from an old one's keys.) Each partition holds:
//! - `projection`: a hash with the checkpoint (`<log>@<transaction>:<position>@<event>`: the
//!   history of the log it was built from, [`eventstore::LogIdentity`], the position and the
//!   event there) and `rebuilding`.
//! - `fence`: `<epoch>@<log>`, the highest leader epoch that wrote or cleared the store, in that
//!   history: epochs start again in another (a database made anew), whose leaders it must not
//!   refuse.
//! - `account:<id>`: a hash with the read model's fields (those of `account_summary`).
//! - `balances` and `owner:<owner>:balances`: sorted sets of the partition's accounts (and each
//!   owner's) by balance; the high-value query takes the top of each and merges them. Their scores are all 0 and the order is in the member,
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

mod connection;
mod projection;
mod scripts;
mod stored;

use std::time::Duration;

use eventstore::Position;
use eventstore::projection::{Partition, StoredCheckpoint};
use redis::{RedisError, Value};
use rust_decimal::Decimal;
use uuid::Uuid;

use bank::contract::AccountView;
use connection::Connection;
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
    redis: Connection,
    /// The configured prefix of every key.
    prefix: String,
    /// How many partitions the store is split into.
    partitions: u32,
    /// What [`RedisAccounts::may_evict`] found last, and when.
    eviction: std::sync::Arc<std::sync::Mutex<Option<EvictionCheck>>>,
    /// Where the projection loads the data keys its events were sealed with
    /// ([`RedisAccounts::loading_keys_from`]).
    keys_from: Option<sqlx::PgPool>,
}

/// When Redis's memory settings were read, and the risk they showed, if any.
type EvictionCheck = (std::time::Instant, Option<String>);

/// How often [`RedisAccounts::may_evict`] asks Redis again.
const EVICTION_CHECK: Duration = Duration::from_secs(60);

/// How soon it asks again when Redis did not answer.
const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// The hash tag the keys of `partition` carry after the prefix: a Redis Cluster puts the keys
/// whose tags are the same in one slot.
pub fn slot_tag(partition: Partition) -> String {
    format!("{{p{}-of-{}}}:", partition.index, partition.count)
}

/// The keys of one partition of the store.
#[derive(Clone)]
struct Keys {
    /// The configured prefix, then the partition's [`slot_tag`].
    prefix: String,
}

impl Keys {
    fn new(prefix: &str, partition: Partition) -> Keys {
        Keys { prefix: format!("{prefix}{}", slot_tag(partition)) }
    }

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

/// What the read store said, with the checkpoints of the partitions it read.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisRead<T> {
    /// The least of the partitions' checkpoints: everything up to it is in the answer. `None`:
    /// a partition holds no checkpoint (never built, or emptied). A checkpoint's history
    /// ([`eventstore::LogIdentity`]) is [`eventstore::projection::CLEARING_LOG`] while its
    /// partition is being cleared.
    pub checkpoint: Option<StoredCheckpoint>,
    /// A rebuild has not yet brought a partition back to where it was.
    pub rebuilding: bool,
    /// Each partition read, with its checkpoint: each must be of the log's history.
    pub partitions: Vec<(Partition, StoredCheckpoint)>,
    pub value: T,
}

impl RedisRead<()> {
    /// The partitions' reads as one: the least checkpoint, a rebuild if any rebuilds.
    fn combined(reads: Vec<(Partition, Option<StoredCheckpoint>, bool)>) -> RedisRead<()> {
        let rebuilding = reads.iter().any(|(_, _, rebuilding)| *rebuilding);
        let partitions: Option<Vec<(Partition, StoredCheckpoint)>> = reads
            .into_iter()
            .map(|(partition, checkpoint, _)| checkpoint.map(|checkpoint| (partition, checkpoint)))
            .collect();
        let partitions = partitions.unwrap_or_default();
        let checkpoint = partitions.iter().map(|(_, checkpoint)| checkpoint).min_by_key(|c| c.at.position).cloned();
        RedisRead { checkpoint, rebuilding, partitions, value: () }
    }

    fn with<T>(self, value: T) -> RedisRead<T> {
        RedisRead { checkpoint: self.checkpoint, rebuilding: self.rebuilding, partitions: self.partitions, value }
    }
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
    /// The read store at `url` (one Redis, or a cluster: `redis+cluster://host:port,host:port`),
    /// under `prefix`, split into `partitions`. Connects on first use, and again after any
    /// failure, so that the server starts and serves (from Postgres) without Redis.
    pub fn new(url: &str, prefix: &str, partitions: u32) -> Result<RedisAccounts, RedisError> {
        let redis = Connection::open(url)?;
        let (prefix, eviction) = (prefix.to_owned(), Default::default());
        Ok(RedisAccounts { redis, prefix, partitions: partitions.max(1), eviction, keys_from: None })
    }

    /// The store, its projection loading the data keys of the events it applies from `pool`
    /// (the event store's database). Without it the projection reads sealed fields only with the
    /// keys the process has loaded anyway, and retries a batch until they are.
    pub fn loading_keys_from(mut self, pool: sqlx::PgPool) -> RedisAccounts {
        self.keys_from = Some(pool);
        self
    }

    /// How many partitions the store is split into.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    fn keys(&self, partition: Partition) -> Keys {
        Keys::new(&self.prefix, partition)
    }

    /// The partition holding `account_id`: where the Postgres read model has it.
    fn partition_of(&self, account_id: Uuid) -> Partition {
        Partition::of_stream(account_id, self.partitions)
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
        {
            let mut eviction = self.eviction.lock().expect("never poisoned");
            // One caller asks; the others meanwhile go by what was found last, for at most a
            // few seconds (the caller may give up, or be given up on).
            let now = std::time::Instant::now();
            let asking = now.checked_sub(EVICTION_CHECK - EVICTION_RETRY).unwrap_or(now);
            match eviction.as_mut() {
                Some((at, found)) if at.elapsed() < EVICTION_CHECK => return found.clone(),
                Some((at, _)) => *at = asking,
                None => *eviction = Some((asking, None)),
            }
        }
        // A cluster answers for each master: any of them may evict. Bounded, as it is asked on
        // a query's way; unanswered (a master down, say), what was found before stands, and it
        // is asked again a few seconds later.
        let info = tokio::time::timeout(RESPONSE_TIMEOUT, async {
            redis::cmd("INFO").arg("memory").query_async::<Value>(&mut self.redis.clone()).await
        })
        .await;
        let Ok(Ok(info)) = info else {
            let mut eviction = self.eviction.lock().expect("never poisoned");
            let now = std::time::Instant::now();
            let again_in = now.checked_sub(EVICTION_CHECK - EVICTION_RETRY).unwrap_or(now);
            return eviction.as_mut().and_then(|(at, found)| {
                *at = again_in;
                found.clone()
            });
        };
        let found = match info_texts(info) {
            Some(texts) => texts.iter().find_map(|text| eviction_risk(text)),
            None => Some("Redis answered INFO memory with something else than text".to_owned()),
        };
        if let Some(why) = &found {
            tracing::warn!(why, "the Redis read store is not read from");
        }
        *self.eviction.lock().expect("never poisoned") = Some((std::time::Instant::now(), found.clone()));
        found
    }

    /// The account, as its partition of the store has it.
    pub async fn account(&self, account_id: Uuid) -> Result<RedisRead<Option<AccountView>>, RedisReadError> {
        let partition = self.partition_of(account_id);
        let keys = self.keys(partition);
        let mut script = READ_ACCOUNTS.prepare_invoke();
        script.key(keys.projection()).key(keys.account(account_id)).arg(fields_json());
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (checkpoint, rebuilding, rows) = split_reply(answer)?;
        let as_of = checkpoint.as_ref().map_or(Position::START, |checkpoint| checkpoint.at.position);
        let account = match rows.first() {
            Some(values) => StoredAccount::parse(values)?,
            None => None,
        };
        let read = RedisRead::combined(vec![(partition, checkpoint, rebuilding)]);
        Ok(read.with(account.map(|account| account.into_view(account_id, as_of))))
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
        if self.partitions == 1 {
            let (partition, checkpoint, rebuilding, accounts) =
                self.highest_in(Partition::WHOLE, &lowest, owner_id, limit).await?;
            return Ok(RedisRead::combined(vec![(partition, checkpoint, rebuilding)]).with(accounts));
        }
        // The top `limit` of each partition, asked at once (on a cluster, of several masters),
        // hold the top `limit` of all.
        let mut reads = tokio::task::JoinSet::new();
        for partition in Partition::all(self.partitions) {
            let (store, lowest, owner_id) = (self.clone(), lowest.clone(), owner_id.map(str::to_owned));
            reads.spawn(async move { store.highest_in(partition, &lowest, owner_id.as_deref(), limit).await });
        }
        let (mut partitions, mut accounts) = (Vec::new(), Vec::new());
        while let Some(read) = reads.join_next().await {
            let read =
                read.map_err(|error| RedisReadError::Unreadable(format!("a partition's read stopped: {error}")))?;
            let (partition, checkpoint, rebuilding, found) = read?;
            partitions.push((partition, checkpoint, rebuilding));
            accounts.extend(found);
        }
        partitions.sort_by_key(|(partition, _, _)| partition.index);
        // As the Postgres query orders them: highest balance first, then lowest id.
        accounts.sort_by(|a: &AccountView, b: &AccountView| {
            b.current_balance.cmp(&a.current_balance).then(a.account_id.cmp(&b.account_id))
        });
        accounts.truncate(usize::try_from(limit).unwrap_or(0));
        let read = RedisRead::combined(partitions);
        // The list is as of the least checkpoint, as the Postgres read model's is.
        if let Some(as_of) = read.as_of() {
            accounts.iter_mut().for_each(|account| account.as_of = as_of);
        }
        Ok(read.with(accounts))
    }

    /// The top `limit` accounts of one partition at or above `lowest` (a sortable member).
    async fn highest_in(
        &self,
        partition: Partition,
        lowest: &str,
        owner_id: Option<&str>,
        limit: i64,
    ) -> Result<(Partition, Option<StoredCheckpoint>, bool, Vec<AccountView>), RedisReadError> {
        let keys = self.keys(partition);
        let set = owner_id.map_or_else(|| keys.balances(), |owner| keys.owner_balances(owner));
        let mut script = READ_HIGHEST.prepare_invoke();
        script.key(keys.projection()).key(set);
        script.arg(fields_json()).arg(lowest).arg(limit).arg(keys.account_prefix());
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
        Ok((partition, checkpoint, rebuilding, accounts))
    }

    /// Where the store is: the least of its partitions' checkpoints, and whether one is
    /// rebuilding.
    pub async fn progress(&self) -> Result<RedisRead<()>, RedisReadError> {
        let mut reads = Vec::new();
        for partition in Partition::all(self.partitions) {
            let (checkpoint, rebuilding, _) = self.rows(partition, &[]).await?;
            reads.push((partition, checkpoint, rebuilding));
        }
        Ok(RedisRead::combined(reads))
    }

    /// The stored rows of `ids` (in order, all of `partition`) with the checkpoint they are
    /// current as of, and whether the partition is rebuilding.
    async fn rows(
        &self,
        partition: Partition,
        ids: &[Uuid],
    ) -> Result<(Option<StoredCheckpoint>, bool, Vec<Option<StoredAccount>>), RedisReadError> {
        let keys = self.keys(partition);
        let mut script = READ_ACCOUNTS.prepare_invoke();
        script.key(keys.projection()).arg(fields_json());
        for id in ids {
            script.key(keys.account(*id));
        }
        let answer: Vec<Value> = script.invoke_async(&mut self.redis.clone()).await?;
        let (as_of, rebuilding, rows) = split_reply(answer)?;
        let rows = rows.iter().map(|values| StoredAccount::parse(values)).collect::<Result<_, _>>()?;
        Ok((as_of, rebuilding, rows))
    }
}

/// The text of an `INFO` answer: one, or one per master of a cluster.
fn info_texts(info: Value) -> Option<Vec<String>> {
    match info {
        Value::Map(nodes) => nodes.into_iter().map(|(_, text)| redis::from_redis_value(text).ok()).collect(),
        text => redis::from_redis_value(text).ok().map(|text| vec![text]),
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
