//! The queries of the Postgres read model: an account, the lists, the ledger and the transfers,
//! each with the checkpoint it is current as of, waiting (bounded) for a token when asked to.

use std::time::Duration;

use eventstore::{CheckpointWatch, Position, Waited};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use bank::contract::{
    AccountList, AccountView, Ledger, LedgerEntry, PageCursor, STATEMENT_MAX_ENTRIES, ServedBy, Statement,
    StatementPeriod, TransferList, TransferView,
};

mod rows;

pub use rows::SUMMARY_SELECT;

use rows::{LedgerRow, SUMMARY_OF_ONE, SummaryOrCheckpoint, SummaryRow, TransferRow, list_statement};

use super::account_summary::PROJECTION_NAME;
use super::{ReadPools, RedisReads, ReplicaStatus, account_ledger, transfers};

/// How long a query holding a token the primary's read model has passed gives the replica to
/// replay it before the primary answers instead.
const REPLICA_CATCH_UP: Duration = Duration::from_millis(200);

/// The most a list query returns.
pub const LIST_LIMIT: i64 = 100;

#[derive(Clone)]
pub struct ReadModel {
    /// The primary, and the replica queries read while it serves.
    reads: ReadPools,
    /// How long a query with `after=<token>` waits for the projection to pass the token.
    catch_up_bound: Duration,
    /// Every projection's checkpoint, watched in-process: waiting costs no query.
    checkpoints: CheckpointWatch,
    /// The second read store, if there is one.
    redis: Option<RedisReads>,
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
    fn new(read: SummaryRead, after: Option<Position>) -> AccountLookup {
        let SummaryRead { row, as_of, served_by } = read;
        let behind = after.filter(|after| as_of < *after);
        match (row, behind) {
            (Some(row), behind) => AccountLookup::Found(row.into_view(behind.is_some(), served_by)),
            (None, None) => AccountLookup::Unknown,
            (None, Some(after)) => AccountLookup::NotYet { after, as_of },
        }
    }
}

/// One account's row (if any), the checkpoint it is current as of, and which database said so.
struct SummaryRead {
    row: Option<SummaryRow>,
    as_of: Position,
    served_by: ServedBy,
}

impl ReadModel {
    pub fn new(reads: ReadPools, catch_up_bound: Duration, checkpoints: CheckpointWatch) -> ReadModel {
        ReadModel { reads, catch_up_bound, checkpoints, redis: None }
    }

    /// Starts measuring the replica's lag once a second, if there is one: until it is measured,
    /// queries read the primary.
    pub fn spawn_replica_monitor(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.reads.spawn_lag_monitor(shutdown)
    }

    /// The replica's health, if queries may read one.
    pub fn replica_health(&self) -> Option<ReplicaStatus> {
        self.reads.replica_health()
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
        let read = self.summary(account_id).await?;
        let Some(after) = after.filter(|after| read.as_of < *after) else {
            return Ok(AccountLookup::new(read, None));
        };
        // No event has that position: no wait can reach it, and no account was created there.
        if eventstore::head(self.reads.primary()).await? < after {
            return Ok(match read.row {
                Some(row) => AccountLookup::Found(row.into_view(true, read.served_by)),
                None => AccountLookup::Unknown,
            });
        }
        let read = match self.checkpoints.wait_for(PROJECTION_NAME, after, deadline).await {
            Waited::Reached => self.summary_replayed_past(account_id, after).await?,
            Waited::TimedOut | Waited::TooManyWaiters => read,
        };
        Ok(AccountLookup::new(read, Some(after)))
    }

    /// The account once the database queries read has the read model at or past `after`, which
    /// the primary's has: at once on the primary, a moment later on a replica (which replays
    /// the primary's log). The replica is asked a few times within [`REPLICA_CATCH_UP`]; then
    /// the primary answers, so that a lagging replica costs a token's reader no more than that.
    async fn summary_replayed_past(&self, account_id: Uuid, after: Position) -> Result<SummaryRead, sqlx::Error> {
        let give_up = tokio::time::Instant::now() + REPLICA_CATCH_UP;
        let mut pause = Duration::from_millis(2);
        loop {
            let read = self.summary(account_id).await?;
            if read.as_of >= after || read.served_by != ServedBy::PostgresReplica {
                return Ok(read);
            }
            if tokio::time::Instant::now() + pause > give_up {
                return self.summary_from(account_id, true).await;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The account's row (if any) and the checkpoint it is current as of, in one statement:
    /// read separately, a batch committing in between could make the checkpoint pass a
    /// position whose row was read before it existed.
    async fn summary(&self, account_id: Uuid) -> Result<SummaryRead, sqlx::Error> {
        self.summary_from(account_id, false).await
    }

    /// [`Self::summary`], from the primary if `primary`, else wherever queries read now.
    async fn summary_from(&self, account_id: Uuid, primary: bool) -> Result<SummaryRead, sqlx::Error> {
        let read = |pool: PgPool| async move {
            sqlx::query_as::<_, SummaryOrCheckpoint>(SUMMARY_OF_ONE)
                .bind(PROJECTION_NAME)
                .bind(account_id)
                .fetch_optional(&pool)
                .await
        };
        let (found, served_by) =
            if primary { self.reads.read_primary(read).await? } else { self.reads.read(read).await? };
        let (row, as_of) = found.map_or((None, Position::START), |SummaryOrCheckpoint(row, as_of)| (row, as_of));
        Ok(SummaryRead { row, as_of, served_by })
    }

    /// Waits (at most its bound) until `projection` has passed `after` in this process's view,
    /// if it is behind it and the log has an event that far. True if it got there: the primary
    /// has it then, a replica perhaps not yet, so the caller reads the primary.
    async fn caught_up_with(&self, projection: &str, after: Option<Position>) -> Result<bool, sqlx::Error> {
        let Some(after) = after.filter(|after| self.checkpoints.position(projection).is_none_or(|at| at < *after))
        else {
            return Ok(false);
        };
        // No event has that position: no wait can reach it.
        if eventstore::head(self.reads.primary()).await? < after {
            return Ok(false);
        }
        let deadline = tokio::time::Instant::now() + self.catch_up_bound;
        Ok(matches!(self.checkpoints.wait_for(projection, after, deadline).await, Waited::Reached))
    }

    /// The newest accounts, optionally of one owner, at most [`LIST_LIMIT`]; with `after`, once
    /// the read model has passed it (waiting as [`Self::account`] does, at most its bound: the
    /// list's `as_of` says whether it got there).
    pub async fn accounts(
        &self,
        owner_id: Option<&str>,
        before: Option<PageCursor>,
        after: Option<Position>,
    ) -> Result<AccountList, sqlx::Error> {
        let primary = self.caught_up_with(PROJECTION_NAME, after).await?;
        let read = |pool: PgPool| async move {
            sqlx::query_as(&list_statement(
                "($2::text IS NULL OR s.owner_id = $2)
                 AND ($3::timestamptz IS NULL OR (s.created_at, s.account_id) < ($3, $4))",
                "s.created_at DESC, s.account_id DESC",
            ))
            .bind(PROJECTION_NAME)
            .bind(owner_id)
            .bind(before.map(|cursor| cursor.at))
            .bind(before.map(|cursor| cursor.id))
            .fetch_all(&pool)
            .await
        };
        let listed_rows = if primary { self.reads.read_primary(read).await? } else { self.reads.read(read).await? };
        let mut list = listed(listed_rows);
        list.next_page = full_page(&list.accounts, LIST_LIMIT, |account| PageCursor {
            at: account.created_at,
            id: account.account_id,
        });
        Ok(list)
    }

    /// Accounts holding at least `min_balance`, highest first, at most [`LIST_LIMIT`].
    /// With `owner_id`, only that owner's.
    pub async fn high_value_accounts(
        &self,
        min_balance: Decimal,
        owner_id: Option<&str>,
        after: Option<Position>,
    ) -> Result<AccountList, sqlx::Error> {
        if let Some(redis) = &self.redis
            && let Some(list) = redis.highest(min_balance, owner_id, LIST_LIMIT, after, self.postgres_at()).await
        {
            return Ok(list);
        }
        let primary = self.caught_up_with(PROJECTION_NAME, after).await?;
        let read = |pool: PgPool| async move {
            sqlx::query_as(&list_statement(
                "s.current_balance >= $2 AND ($3::text IS NULL OR s.owner_id = $3)",
                "s.current_balance DESC, s.account_id",
            ))
            .bind(PROJECTION_NAME)
            .bind(min_balance)
            .bind(owner_id)
            .fetch_all(&pool)
            .await
        };
        let listed_rows = if primary { self.reads.read_primary(read).await? } else { self.reads.read(read).await? };
        Ok(listed(listed_rows))
    }

    /// The account's latest `limit` transfers, sent and received, newest first, and the
    /// checkpoint of the transfers read model they are current as of. A transfer whose source
    /// never paid is the sender's business only: the target does not see it.
    pub async fn transfers(
        &self,
        account_id: Uuid,
        limit: i64,
        before: Option<PageCursor>,
    ) -> Result<TransferList, sqlx::Error> {
        Ok(self.reads.read(|pool| transfers_of(pool, account_id, limit, before)).await?.0)
    }

    /// The account's latest `limit` money movements from the ledger, oldest first; with
    /// `after`, once the ledger has passed that position (waiting as [`Self::account`] does, at
    /// most its bound: its `as_of` says whether it got there).
    pub async fn ledger(&self, account_id: Uuid, limit: i64, after: Option<Position>) -> Result<Ledger, sqlx::Error> {
        let read = |pool| ledger_of(pool, account_id, limit);
        if self.caught_up_with(account_ledger::PROJECTION_NAME, after).await? {
            return Ok(self.reads.read_primary(read).await?.0);
        }
        Ok(self.reads.read(read).await?.0)
    }
}

impl ReadModel {
    /// The account's statement for `period`, from the ledger; `None` if it has more than
    /// [`STATEMENT_MAX_ENTRIES`] movements (ask for a shorter period). With `after`, as
    /// [`Self::ledger`].
    pub async fn statement(
        &self,
        account_id: Uuid,
        period: StatementPeriod,
        after: Option<Position>,
    ) -> Result<Option<Statement>, sqlx::Error> {
        let read = |pool| statement_of(pool, account_id, period);
        if self.caught_up_with(account_ledger::PROJECTION_NAME, after).await? {
            return Ok(self.reads.read_primary(read).await?.0);
        }
        Ok(self.reads.read(read).await?.0)
    }
}

/// A list as [`list_statement`] read it, from the database that `served_by` names.
fn listed((found, served_by): (Vec<SummaryOrCheckpoint>, ServedBy)) -> AccountList {
    let as_of = found.first().map_or(Position::START, |SummaryOrCheckpoint(_, as_of)| *as_of);
    let accounts =
        found.into_iter().filter_map(|SummaryOrCheckpoint(row, _)| row).map(|row| row.into_view(false, served_by));
    AccountList { accounts: accounts.collect(), as_of, served_by, next_page: None }
}

/// The cursor after the last row of a page that is full (there may be more), else none.
fn full_page<T>(rows: &[T], limit: i64, cursor: impl Fn(&T) -> PageCursor) -> Option<PageCursor> {
    (rows.len() as i64 >= limit).then(|| rows.last().map(cursor)).flatten()
}

/// The account's transfers sent and received, newest first, those before `before` if given.
async fn transfers_of(
    pool: PgPool,
    account_id: Uuid,
    limit: i64,
    before: Option<PageCursor>,
) -> Result<TransferList, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let rows: Vec<TransferRow> = sqlx::query_as(
        "SELECT * FROM (
             (SELECT * FROM transfers WHERE from_account = $1
                  AND ($3::timestamptz IS NULL OR (requested_at, transfer_id) < ($3, $4))
              ORDER BY requested_at DESC, transfer_id DESC LIMIT $2)
             UNION
             (SELECT * FROM transfers WHERE to_account = $1 AND debited_at IS NOT NULL
                  AND ($3::timestamptz IS NULL OR (requested_at, transfer_id) < ($3, $4))
              ORDER BY requested_at DESC, transfer_id DESC LIMIT $2)
         ) t ORDER BY requested_at DESC, transfer_id DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(limit)
    .bind(before.map(|cursor| cursor.at))
    .bind(before.map(|cursor| cursor.id))
    .fetch_all(&mut *tx)
    .await?;
    let as_of = read_checkpoint(&mut tx, transfers::PROJECTION_NAME).await?;
    tx.commit().await?;
    let transfers: Vec<TransferView> = rows.into_iter().map(TransferRow::into_view).collect::<Result<_, _>>()?;
    let next_page =
        full_page(&transfers, limit, |transfer| PageCursor { at: transfer.requested_at, id: transfer.transfer_id });
    Ok(TransferList { account_id, transfers, as_of, next_page })
}

async fn ledger_of(pool: PgPool, account_id: Uuid, limit: i64) -> Result<Ledger, sqlx::Error> {
    let mut tx = pool.begin().await?;
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
    let as_of = read_checkpoint(&mut tx, account_ledger::PROJECTION_NAME).await?;
    tx.commit().await?;
    entries.reverse();
    Ok(Ledger { account_id, entries: entries.into_iter().map(LedgerRow::into_entry).collect::<Result<_, _>>()?, as_of })
}

/// The movements of a period are those from the first recorded in it to the last recorded in
/// it, by version: a run without gaps, so that each balance follows from the one before even if
/// two movements' times straddle midnight out of order.
async fn statement_of(
    pool: PgPool,
    account_id: Uuid,
    period: StatementPeriod,
) -> Result<Option<Statement>, sqlx::Error> {
    let (start, end) = period.instants();
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT min(version) FILTER (WHERE recorded_at >= $2), max(version) FILTER (WHERE recorded_at < $3)
         FROM account_ledger WHERE account_id = $1",
    )
    .bind(account_id)
    .bind(start)
    .bind(end)
    .fetch_one(&mut *tx)
    .await?;
    // The balance before the period: after the last movement before its first one (before its
    // end, if it has none).
    let before = match (first, last) {
        (Some(first), _) => first,
        (None, Some(last)) => last + 1,
        (None, None) => 0,
    };
    let opening: Option<Decimal> = sqlx::query_scalar(
        "SELECT balance_after FROM account_ledger WHERE account_id = $1 AND version < $2
         ORDER BY version DESC LIMIT 1",
    )
    .bind(account_id)
    .bind(before)
    .fetch_optional(&mut *tx)
    .await?;
    let rows: Vec<LedgerRow> = match (first, last) {
        (Some(first), Some(last)) if first <= last => {
            sqlx::query_as(
                "SELECT version, kind, amount, balance_after, recorded_at FROM account_ledger
                 WHERE account_id = $1 AND version BETWEEN $2 AND $3 ORDER BY version LIMIT $4",
            )
            .bind(account_id)
            .bind(first)
            .bind(last)
            .bind(STATEMENT_MAX_ENTRIES as i64 + 1)
            .fetch_all(&mut *tx)
            .await?
        }
        _ => Vec::new(),
    };
    let as_of = read_checkpoint(&mut tx, account_ledger::PROJECTION_NAME).await?;
    tx.commit().await?;
    if rows.len() > STATEMENT_MAX_ENTRIES {
        return Ok(None);
    }
    let entries: Vec<LedgerEntry> = rows.into_iter().map(LedgerRow::into_entry).collect::<Result<_, _>>()?;
    let opening_balance = opening.unwrap_or(Decimal::ZERO);
    let closing_balance = entries.last().map_or(opening_balance, |entry| entry.balance_after);
    Ok(Some(Statement { account_id, period, opening_balance, entries, closing_balance, as_of }))
}

/// A projection's checkpoint as readers see it (the least of its partitions', if split).
async fn read_checkpoint(conn: &mut sqlx::PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    sqlx::query_as("SELECT transaction_id, global_position FROM projection_checkpoint($1)")
        .bind(name)
        .fetch_one(conn)
        .await
}
