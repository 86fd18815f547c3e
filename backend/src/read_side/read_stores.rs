//! Which read store answers: Redis when it can, Postgres otherwise — never an error because of
//! Redis.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::Position;
use eventstore::projection::StoredCheckpoint;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::redis_accounts::{RedisAccounts, RedisRead};
use bank::contract::{AccountList, AccountView, ServedBy};

/// Which read store the account and high-value queries read (`READ_STORE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadStore {
    /// Redis when it is built and no more than [`AUTO_MAX_LAG`] events behind Postgres's read
    /// model; Postgres otherwise.
    #[default]
    Auto,
    /// Redis whenever it is built and has passed the query's `after`, however far behind.
    Redis,
    /// Postgres only (the Redis projection still runs, if Redis is configured).
    Postgres,
}

impl FromStr for ReadStore {
    type Err = String;

    fn from_str(text: &str) -> Result<ReadStore, String> {
        match text {
            "auto" => Ok(ReadStore::Auto),
            "redis" => Ok(ReadStore::Redis),
            "postgres" => Ok(ReadStore::Postgres),
            other => Err(format!("{other:?} is not a read store: auto, redis or postgres")),
        }
    }
}

/// How far behind the Postgres read model (in positions of the log) Redis may be and still
/// answer in [`ReadStore::Auto`]: behind more, it is catching up or stuck, and Postgres answers.
pub const AUTO_MAX_LAG: i64 = 1_000;

/// How long a query waits for Redis before it asks Postgres instead: Redis answers in well under
/// a millisecond, so much longer means it is unreachable or overloaded.
const READ_TIMEOUT: Duration = Duration::from_millis(250);

/// After Redis fails a query, how long queries go straight to Postgres: a Redis that is down
/// then costs them nothing, not a failed connection each.
const REST_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// How often a query side asks the database which history of the log it has (and when its
/// server started): after a restore or a failover under running servers, Redis answers again
/// only once its checkpoint is found in the new history, at most this long after.
const HISTORY_CHECK: Duration = Duration::from_secs(2);

/// The Redis read store as the queries see it.
#[derive(Clone)]
pub struct RedisReads {
    accounts: RedisAccounts,
    choice: ReadStore,
    resting_until: Arc<Mutex<Option<Instant>>>,
    pool: PgPool,
    /// The database's history now, and when it was read.
    current: Arc<Mutex<Option<(Instant, History)>>>,
    /// For each partition of the store, the history in which a checkpoint of it was found in
    /// the log: Redis answers only with what it built from the history the database has, never a
    /// restored database's future nor another database's. (Per partition: each is built and
    /// kept on its own, on a cluster by another master.)
    trusted: Arc<Mutex<std::collections::HashMap<u32, History>>>,
    /// A checkpoint of Redis's not found in the log: not looked up again.
    refuted: Arc<Mutex<Option<StoredCheckpoint>>>,
}

/// Which history of the log the database has, and since when its server runs: a restart may
/// bring another history with the same name (a restore in place), so what was trusted is
/// checked again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct History {
    log: String,
    server_started_at: time::OffsetDateTime,
}

impl RedisReads {
    pub fn new(accounts: RedisAccounts, choice: ReadStore, pool: PgPool) -> RedisReads {
        RedisReads {
            accounts,
            choice,
            resting_until: Arc::new(Mutex::new(None)),
            pool,
            current: Arc::default(),
            trusted: Arc::default(),
            refuted: Arc::default(),
        }
    }

    /// The database's history, read again when older than [`HISTORY_CHECK`]; `None` while the
    /// log is empty or the database cannot say.
    async fn history(&self) -> Option<History> {
        if let Some((at, history)) = self.current.lock().expect("never poisoned").as_ref()
            && at.elapsed() < HISTORY_CHECK
        {
            return Some(history.clone());
        }
        // The log's history, and the generation of the store's partition count in it.
        let log = eventstore::projection::store_history(&self.pool, super::redis_accounts::PROJECTION_NAME)
            .await
            .ok()
            .flatten()?;
        let server_started_at = eventstore::server_started_at(&self.pool).await.ok()?;
        let history = History { log, server_started_at };
        *self.current.lock().expect("never poisoned") = Some((Instant::now(), history.clone()));
        Some(history)
    }

    /// Whether Redis's `checkpoint` belongs to the database's `history`: of its name, and — once
    /// per history and server start — its event found in the log at its position.
    async fn of_this_history(&self, partition: u32, checkpoint: &StoredCheckpoint, history: &History) -> bool {
        if checkpoint.log != history.log {
            return false;
        }
        if self.trusted.lock().expect("never poisoned").get(&partition) == Some(history) {
            return true;
        }
        if self.refuted.lock().expect("never poisoned").as_ref() == Some(checkpoint) {
            return false;
        }
        let found = match eventstore::event_at(&self.pool, checkpoint.at.position).await {
            Ok(found) => found,
            Err(_) => return false,
        };
        if found == checkpoint.at.event {
            self.trusted.lock().expect("never poisoned").insert(partition, history.clone());
            true
        } else {
            tracing::warn!(
                checkpoint = %checkpoint.at.position,
                "the Redis read store is of a history the database no longer has; queries read Postgres until it is rebuilt"
            );
            *self.refuted.lock().expect("never poisoned") = Some(checkpoint.clone());
            false
        }
    }

    /// The account from Redis, if Redis may answer for it: `None` sends the query to Postgres
    /// (as does an account Redis does not hold: Postgres may be ahead).
    pub async fn account(
        &self,
        account_id: Uuid,
        after: Option<Position>,
        postgres_at: Option<Position>,
    ) -> Option<AccountView> {
        if !self.asked() {
            return None;
        }
        let answer = self.answered(self.accounts.account(account_id)).await?;
        if !self.may_answer(&answer, after, postgres_at).await {
            return None;
        }
        answer.value
    }

    /// The high-value accounts from Redis, if Redis may answer (and has passed `after`).
    pub async fn highest(
        &self,
        min_balance: Decimal,
        owner_id: Option<&str>,
        limit: i64,
        after: Option<Position>,
        postgres_at: Option<Position>,
    ) -> Option<AccountList> {
        if !self.asked() {
            return None;
        }
        let answer = self.answered(self.accounts.highest(min_balance, owner_id, limit)).await?;
        if !self.may_answer(&answer, after, postgres_at).await {
            return None;
        }
        let as_of = answer.as_of()?;
        Some(AccountList { accounts: answer.value, as_of, served_by: ServedBy::Redis, next_page: None })
    }

    /// Whether Redis is to be asked at all: chosen, and not resting after a failure.
    fn asked(&self) -> bool {
        if self.choice == ReadStore::Postgres {
            return false;
        }
        let resting_until = self.resting_until.lock().expect("never poisoned");
        resting_until.is_none_or(|until| Instant::now() >= until)
    }

    /// The answer of `read`, if it comes in time and without an error; else Redis rests.
    async fn answered<T>(
        &self,
        read: impl Future<Output = Result<RedisRead<T>, super::redis_accounts::RedisReadError>>,
    ) -> Option<RedisRead<T>> {
        let answer = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(answer) => answer.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {READ_TIMEOUT:?}")),
        };
        match answer {
            Ok(answer) => Some(answer),
            Err(error) => {
                let mut resting_until = self.resting_until.lock().expect("never poisoned");
                if resting_until.is_none_or(|until| Instant::now() >= until) {
                    tracing::warn!(%error, "the Redis read store cannot answer; queries read Postgres for a while");
                }
                *resting_until = Some(Instant::now() + REST_AFTER_FAILURE);
                None
            }
        }
    }

    /// Whether an answer from Redis may stand: the store is built from the history of the log
    /// the database has (and not rebuilding), Redis cannot evict its keys, it has passed `after`,
    /// and — in `auto` — it is not far behind the Postgres read model.
    async fn may_answer<T>(
        &self,
        answer: &RedisRead<T>,
        after: Option<Position>,
        postgres_at: Option<Position>,
    ) -> bool {
        let Some(checkpoint) = answer.checkpoint.as_ref().filter(|_| !answer.rebuilding) else {
            return false;
        };
        let as_of = checkpoint.at.position;
        if after.is_some_and(|after| as_of < after) {
            return false;
        }
        if let (ReadStore::Auto, Some(postgres)) = (self.choice, postgres_at)
            && postgres.global_position - as_of.global_position > AUTO_MAX_LAG
        {
            return false;
        }
        let Some(history) = self.history().await else { return false };
        for (partition, checkpoint) in &answer.partitions {
            if !self.of_this_history(partition.index, checkpoint, &history).await {
                return false;
            }
        }
        self.accounts.may_evict().await.is_none()
    }
}
