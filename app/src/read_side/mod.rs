//! The read side: projections that keep read tables current, and the queries that read them.
//!
//! Every answer carries the checkpoint it is current as of. A caller holding a command's
//! consistency token may ask to wait (bounded) until the read model has passed it.

pub mod account_ledger;
pub mod account_summary;
pub mod history;
pub mod live;
pub mod read_stores;
pub mod redis_accounts;
pub mod transfers;

use std::time::Duration;

use eventstore::{CheckpointWatch, Position, Waited};
use rust_decimal::Decimal;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::contract::{
    AccountList, AccountStatusView, AccountView, Ledger, LedgerEntry, MovementKind, ServedBy, TransferList,
    TransferStateView, TransferView,
};
pub use account_ledger::AccountLedgerProjection;
pub use account_summary::AccountSummaryProjection;
pub use history::AccountHistory;
pub use read_stores::{ReadStore, RedisReads};
pub use redis_accounts::RedisAccounts;
pub use transfers::TransfersProjection;

/// Brings the database up to date: the event store's tables (its own migrations), then the
/// read models' tables (the workspace's `migrations/` folder). Both share sqlx's migration
/// history, so each leaves the other's versions alone.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    eventstore::schema::migrate(pool).await?;
    let mut read_tables = sqlx::migrate!("../migrations");
    read_tables.set_ignore_missing(true);
    read_tables.run(pool).await
}

/// Gives the server's database role what it needs (run by the owner of the tables, after
/// [`migrate`]): the event store's share (append and read events, never change them), the
/// users' tables, and the read tables as their owner — a rebuild creates shadow tables beside
/// them and swaps them in, which only an owner may do. The migrating role must be a superuser or
/// a member of the server's role (to hand tables to it, and to alter them later).
pub async fn grant_to_server_role(pool: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    eventstore::schema::grant_to_server_role(pool, role).await?;
    let role = eventstore::schema::quoted_identifier(pool, role).await?;
    let schema: String = sqlx::query_scalar("SELECT quote_ident(current_schema())").fetch_one(pool).await?;
    let statements = [
        format!("GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON users, sessions, api_tokens TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE ON transfer_process_checkpoint TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON transfer_process_parked TO {role}"),
    ];
    for statement in statements {
        sqlx::query(&statement).execute(pool).await?;
    }
    // Only where the owner differs: altering takes an exclusive lock (readers on running
    // instances would wait), and once the server's role owns a table only it or a superuser may
    // alter it. A rebuild's shadow table left by a server that stopped mid-way goes too.
    use eventstore::Projection;
    let tables = [AccountSummaryProjection.tables(), AccountLedgerProjection.tables(), TransfersProjection.tables()];
    for table in tables.into_iter().flatten() {
        for name in [table.to_string(), format!("{table}_rebuild"), format!("{table}_replaced")] {
            let owned_elsewhere: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                 WHERE c.oid = to_regclass(quote_ident($1)) AND quote_ident(r.rolname) <> $2)",
            )
            .bind(&name)
            .bind(&role)
            .fetch_one(pool)
            .await?;
            if owned_elsewhere {
                sqlx::query(&format!(r#"ALTER TABLE "{name}" OWNER TO {role}"#)).execute(pool).await?;
            }
        }
    }
    Ok(())
}

/// The name of every projection [`run_projections`] runs in Postgres (the Redis one is
/// [`redis_accounts::PROJECTION_NAME`]).
pub const PROJECTION_NAMES: &[&str] =
    &[account_summary::PROJECTION_NAME, account_ledger::PROJECTION_NAME, transfers::PROJECTION_NAME];

/// Starts a runner for every projection (the Redis one if there is a Redis); each leads its
/// projection in one instance at a time. A new projection is a module, a migration for its
/// tables, and a line here: it catches up from the first event by itself.
pub fn run_projections(
    pool: &PgPool,
    appends: &eventstore::Appends,
    checkpoints: &CheckpointWatch,
    redis: Option<&RedisAccounts>,
    instance: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    use eventstore::ProjectionRunner;
    use eventstore::projection::ExternalProjectionRunner;
    let in_redis = redis.map(|redis| {
        tokio::spawn(
            ExternalProjectionRunner::new(pool.clone(), redis.clone(), appends.subscribe(), instance)
                .run(shutdown.clone()),
        )
    });
    let mut runners = vec![
        tokio::spawn(
            ProjectionRunner::new(pool.clone(), AccountSummaryProjection, appends.subscribe(), instance)
                .publish_checkpoints(checkpoints.clone())
                .run(shutdown.clone()),
        ),
        tokio::spawn(
            ProjectionRunner::new(pool.clone(), AccountLedgerProjection, appends.subscribe(), instance)
                .publish_checkpoints(checkpoints.clone())
                .run(shutdown.clone()),
        ),
        tokio::spawn(
            ProjectionRunner::new(pool.clone(), TransfersProjection, appends.subscribe(), instance)
                .publish_checkpoints(checkpoints.clone())
                .run(shutdown.clone()),
        ),
    ];
    runners.extend(in_redis);
    runners
}
use account_summary::PROJECTION_NAME;

/// The most a list query returns.
pub const LIST_LIMIT: i64 = 100;

#[derive(Clone)]
pub struct ReadModel {
    pool: PgPool,
    /// How long a query with `after=<token>` waits for the projection to pass the token.
    catch_up_bound: Duration,
    /// Every projection's checkpoint, watched in-process: waiting costs no query.
    checkpoints: CheckpointWatch,
    /// The second read store, if there is one.
    redis: Option<RedisReads>,
}

/// One `account_summary` row and the projection checkpoint, read by one statement so that the
/// two are consistent.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    account_id: Uuid,
    owner_id: String,
    current_balance: Decimal,
    total_deposits: Decimal,
    total_withdrawals: Decimal,
    transaction_count: i64,
    last_transaction: OffsetDateTime,
    created_at: OffsetDateTime,
    version: i64,
    status: String,
    status_reason: Option<String>,
    /// The checkpoint the row is current as of.
    #[sqlx(flatten)]
    as_of: Position,
}

impl SummaryRow {
    fn into_view(self, stale: bool) -> AccountView {
        AccountView {
            served_by: ServedBy::Postgres,
            as_of: self.as_of,
            account_id: self.account_id,
            owner_id: self.owner_id,
            current_balance: self.current_balance,
            total_deposits: self.total_deposits,
            total_withdrawals: self.total_withdrawals,
            transaction_count: self.transaction_count,
            last_transaction: self.last_transaction,
            created_at: self.created_at,
            version: self.version,
            stale,
            status: AccountStatusView::parse(&self.status).unwrap_or_default(),
            status_reason: self.status_reason,
        }
    }
}

/// What the read model says of one account.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountLookup {
    /// The account, marked stale if the read model has not passed the position asked for.
    Found(AccountView),
    /// The read model knows no such account, and was asked for no position it has not passed.
    Unknown,
    /// The read model knows no such account yet, and has not passed the position asked for:
    /// the account may well exist (its creation may be that position). Not a 404.
    NotYet { after: Position, as_of: Position },
}

impl AccountLookup {
    fn new(row: Option<SummaryRow>, as_of: Position, after: Option<Position>) -> AccountLookup {
        let behind = after.filter(|after| as_of < *after);
        match (row, behind) {
            (Some(row), behind) => AccountLookup::Found(row.into_view(behind.is_some())),
            (None, None) => AccountLookup::Unknown,
            (None, Some(after)) => AccountLookup::NotYet { after, as_of },
        }
    }
}

/// The checkpoint, and the account's row if the left join found one: the row's own columns are
/// decoded as a [`SummaryRow`] only when they are there.
struct SummaryOrCheckpoint(Option<SummaryRow>, Position);

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for SummaryOrCheckpoint {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<SummaryOrCheckpoint, sqlx::Error> {
        use sqlx::Row;
        let found: Option<Uuid> = row.try_get("account_id")?;
        let summary = found.map(|_| SummaryRow::from_row(row)).transpose()?;
        Ok(SummaryOrCheckpoint(summary, Position::from_row(row)?))
    }
}

#[derive(sqlx::FromRow)]
struct TransferRow {
    transfer_id: Uuid,
    from_account: Uuid,
    to_account: Uuid,
    amount: Decimal,
    state: String,
    reason: Option<String>,
    requested_at: OffsetDateTime,
    deadline: OffsetDateTime,
    debited_at: Option<OffsetDateTime>,
    credited_at: Option<OffsetDateTime>,
    refunded_at: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
}

impl TransferRow {
    fn into_view(self) -> Result<TransferView, sqlx::Error> {
        let state = TransferStateView::parse(&self.state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown transfer state {:?}", self.state).into()))?;
        Ok(TransferView {
            transfer_id: self.transfer_id,
            from_account_id: self.from_account,
            to_account_id: self.to_account,
            amount: self.amount,
            state,
            reason: self.reason,
            requested_at: self.requested_at,
            deadline: self.deadline,
            debited_at: self.debited_at,
            credited_at: self.credited_at,
            refunded_at: self.refunded_at,
            finished_at: self.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct LedgerRow {
    version: i64,
    kind: String,
    amount: Decimal,
    balance_after: Decimal,
    recorded_at: OffsetDateTime,
}

/// Columns of `account_summary s` joined with its checkpoint `c`, read through the event
/// store's `projection_checkpoint(name)` relation (public for the benchmark that compares the
/// query over HTTP with the statement alone).
pub const SUMMARY_SELECT: &str = "SELECT s.account_id, s.owner_id, s.current_balance, s.total_deposits,
        s.total_withdrawals, s.transaction_count, s.last_transaction, s.created_at, s.version,
        s.status, s.status_reason, c.transaction_id, c.global_position
     FROM account_summary s, projection_checkpoint($1) c";

impl ReadModel {
    pub fn new(pool: PgPool, catch_up_bound: Duration, checkpoints: CheckpointWatch) -> ReadModel {
        ReadModel { pool, catch_up_bound, checkpoints, redis: None }
    }

    /// Lets Redis answer the account and high-value queries when it can.
    pub fn with_redis(mut self, redis: RedisReads) -> ReadModel {
        self.redis = Some(redis);
        self
    }

    /// Where the Postgres read model is, as this process knows it.
    fn postgres_at(&self) -> Option<Position> {
        self.checkpoints.position(PROJECTION_NAME)
    }

    /// The account as the read model knows it; `None` if it does not know it (yet).
    ///
    /// With `after`, waits until the projection has passed that position or the bound expires;
    /// in the second case the answer is marked stale. The wait holds no connection: it watches
    /// the checkpoints in-process and reads the row once more when woken. A position beyond the
    /// newest event in the store, or a wait beyond the cap on waiters, answers stale at once.
    #[tracing::instrument(skip(self))]
    pub async fn account(&self, account_id: Uuid, after: Option<Position>) -> Result<AccountLookup, sqlx::Error> {
        if let Some(redis) = &self.redis
            && let Some(view) = redis.account(account_id, after, self.postgres_at()).await
        {
            return Ok(AccountLookup::Found(view));
        }
        let deadline = tokio::time::Instant::now() + self.catch_up_bound;
        let (row, as_of) = self.summary(account_id).await?;
        let Some(after) = after.filter(|after| as_of < *after) else {
            return Ok(AccountLookup::new(row, as_of, None));
        };
        // No event has that position: no wait can reach it, and no account was created there.
        if eventstore::head(&self.pool).await? < after {
            return Ok(match row {
                Some(row) => AccountLookup::Found(row.into_view(true)),
                None => AccountLookup::Unknown,
            });
        }
        let (row, as_of) = match self.checkpoints.wait_for(PROJECTION_NAME, after, deadline).await {
            Waited::Reached => self.summary(account_id).await?,
            Waited::TimedOut | Waited::TooManyWaiters => (row, as_of),
        };
        Ok(AccountLookup::new(row, as_of, Some(after)))
    }

    /// The account's row (if any) and the checkpoint it is current as of, in one statement:
    /// read separately, a batch committing in between could make the checkpoint pass a
    /// position whose row was read before it existed.
    async fn summary(&self, account_id: Uuid) -> Result<(Option<SummaryRow>, Position), sqlx::Error> {
        let found: Option<SummaryOrCheckpoint> = sqlx::query_as(
            "SELECT s.account_id, s.owner_id, s.current_balance, s.total_deposits, s.total_withdrawals,
                    s.transaction_count, s.last_transaction, s.created_at, s.version,
                    s.status, s.status_reason, c.transaction_id, c.global_position
             FROM projection_checkpoint($1) c
             LEFT JOIN account_summary s ON s.account_id = $2",
        )
        .bind(PROJECTION_NAME)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map_or((None, Position::START), |SummaryOrCheckpoint(row, as_of)| (row, as_of)))
    }

    /// The newest accounts, optionally of one owner, at most [`LIST_LIMIT`].
    pub async fn accounts(&self, owner_id: Option<&str>) -> Result<AccountList, sqlx::Error> {
        let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
            "{SUMMARY_SELECT} WHERE $2::text IS NULL OR s.owner_id = $2
             ORDER BY s.created_at DESC, s.account_id LIMIT {LIST_LIMIT}"
        ))
        .bind(PROJECTION_NAME)
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        self.list(rows).await
    }

    /// Accounts holding at least `min_balance`, highest first, at most [`LIST_LIMIT`].
    /// With `owner_id`, only that owner's.
    pub async fn high_value_accounts(
        &self,
        min_balance: Decimal,
        owner_id: Option<&str>,
    ) -> Result<AccountList, sqlx::Error> {
        if let Some(redis) = &self.redis
            && let Some(list) = redis.highest(min_balance, owner_id, LIST_LIMIT, self.postgres_at()).await
        {
            return Ok(list);
        }
        let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
            "{SUMMARY_SELECT} WHERE s.current_balance >= $2 AND ($3::text IS NULL OR s.owner_id = $3)
             ORDER BY s.current_balance DESC, s.account_id LIMIT {LIST_LIMIT}"
        ))
        .bind(PROJECTION_NAME)
        .bind(min_balance)
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        self.list(rows).await
    }

    async fn list(&self, rows: Vec<SummaryRow>) -> Result<AccountList, sqlx::Error> {
        let as_of = match rows.first() {
            Some(row) => row.as_of,
            None => self.checkpoint().await?,
        };
        Ok(AccountList {
            accounts: rows.into_iter().map(|row| row.into_view(false)).collect(),
            as_of,
            served_by: ServedBy::Postgres,
        })
    }

    async fn checkpoint(&self) -> Result<Position, sqlx::Error> {
        eventstore::projection::checkpoint(&self.pool, PROJECTION_NAME).await
    }

    /// The account's latest `limit` transfers, sent and received, newest first, and the
    /// checkpoint of the transfers read model they are current as of. A transfer whose source
    /// never paid is the sender's business only: the target does not see it.
    pub async fn transfers(&self, account_id: Uuid, limit: i64) -> Result<TransferList, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let rows: Vec<TransferRow> = sqlx::query_as(
            "SELECT * FROM (
                 (SELECT * FROM transfers WHERE from_account = $1 ORDER BY requested_at DESC LIMIT $2)
                 UNION
                 (SELECT * FROM transfers WHERE to_account = $1 AND debited_at IS NOT NULL
                  ORDER BY requested_at DESC LIMIT $2)
             ) t ORDER BY requested_at DESC, transfer_id LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let as_of = eventstore::projection::checkpoint(&mut *tx, transfers::PROJECTION_NAME).await?;
        tx.commit().await?;
        let transfers = rows.into_iter().map(TransferRow::into_view).collect::<Result<_, _>>()?;
        Ok(TransferList { account_id, transfers, as_of })
    }

    /// The account's latest `limit` money movements from the ledger, oldest first.
    pub async fn ledger(&self, account_id: Uuid, limit: i64) -> Result<Ledger, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for the rows and the checkpoint they are current as of.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let mut entries: Vec<LedgerRow> = sqlx::query_as(
            "SELECT version, kind, amount, balance_after, recorded_at FROM account_ledger
             WHERE account_id = $1 ORDER BY version DESC LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let as_of = eventstore::projection::checkpoint(&mut *tx, account_ledger::PROJECTION_NAME).await?;
        tx.commit().await?;
        entries.reverse();
        Ok(Ledger {
            account_id,
            entries: entries
                .into_iter()
                .map(|row| {
                    let kind = MovementKind::parse(&row.kind)
                        .ok_or_else(|| sqlx::Error::Decode(format!("unknown ledger kind {:?}", row.kind).into()))?;
                    Ok(LedgerEntry {
                        version: row.version,
                        kind,
                        amount: row.amount,
                        balance_after: row.balance_after,
                        recorded_at: row.recorded_at,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?,
            as_of,
        })
    }
}
