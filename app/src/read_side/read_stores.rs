//! Which read store answers: Redis when it can, Postgres otherwise — never an error because of
//! Redis.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::Position;
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::redis_accounts::{RedisAccounts, RedisAnswer};
use crate::contract::{AccountList, AccountView, ServedBy};

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

/// The Redis read store as the queries see it.
#[derive(Clone)]
pub struct RedisReads {
    accounts: RedisAccounts,
    choice: ReadStore,
    resting_until: Arc<Mutex<Option<Instant>>>,
    /// This database's event log ([`eventstore::log_identity`]), once it has an event: Redis
    /// answers only with what it built from this log, never another database's.
    pool: PgPool,
    log: Arc<OnceCell<Uuid>>,
}

impl RedisReads {
    pub fn new(accounts: RedisAccounts, choice: ReadStore, pool: PgPool) -> RedisReads {
        RedisReads { accounts, choice, resting_until: Arc::new(Mutex::new(None)), pool, log: Arc::new(OnceCell::new()) }
    }

    /// This database's log identity: read once it exists, then remembered (it never changes).
    async fn log(&self) -> Option<Uuid> {
        if let Some(log) = self.log.get() {
            return Some(*log);
        }
        let log = eventstore::log_identity(&self.pool).await.ok().flatten()?;
        Some(*self.log.get_or_init(|| async { log }).await)
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
        let log = self.log().await?;
        let answer = self.answered(self.accounts.account(account_id)).await?;
        if !self.may_answer(&answer, log, after, postgres_at) {
            return None;
        }
        answer.value
    }

    /// The high-value accounts from Redis, if Redis may answer.
    pub async fn highest(
        &self,
        min_balance: Decimal,
        owner_id: Option<&str>,
        limit: i64,
        postgres_at: Option<Position>,
    ) -> Option<AccountList> {
        if !self.asked() {
            return None;
        }
        let log = self.log().await?;
        let answer = self.answered(self.accounts.highest(min_balance, owner_id, limit)).await?;
        if !self.may_answer(&answer, log, None, postgres_at) {
            return None;
        }
        let as_of = answer.as_of?;
        Some(AccountList { accounts: answer.value, as_of, served_by: ServedBy::Redis })
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
        read: impl Future<Output = Result<RedisAnswer<T>, super::redis_accounts::RedisReadError>>,
    ) -> Option<RedisAnswer<T>> {
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

    /// Whether an answer from Redis may stand: the store is built from this database's `log`
    /// (and not rebuilding), has passed `after`, and — in `auto` — is not far behind the Postgres
    /// read model.
    fn may_answer<T>(
        &self,
        answer: &RedisAnswer<T>,
        log: Uuid,
        after: Option<Position>,
        postgres_at: Option<Position>,
    ) -> bool {
        let Some(as_of) = answer.as_of.filter(|_| !answer.rebuilding && answer.log == Some(log)) else {
            return false;
        };
        if after.is_some_and(|after| as_of < after) {
            return false;
        }
        match (self.choice, postgres_at) {
            (ReadStore::Auto, Some(postgres)) => postgres.global_position - as_of.global_position <= AUTO_MAX_LAG,
            _ => true,
        }
    }
}
