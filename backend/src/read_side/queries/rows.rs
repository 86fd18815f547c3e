//! The read tables' rows as the queries read them, and how each becomes its wire type; the
//! summary's columns and statements, which read a row with the checkpoint it is current as of.

use eventstore::Position;
use rust_decimal::Decimal;
use time::OffsetDateTime;
use uuid::Uuid;

use bank::contract::{
    AccountStatusView, AccountView, LedgerEntry, MovementKind, ServedBy, TransferStateView, TransferView,
};

use super::LIST_LIMIT;

/// One `account_summary` row and the projection checkpoint, read by one statement so that the
/// two are consistent.
#[derive(sqlx::FromRow)]
pub(super) struct SummaryRow {
    pub(super) account_id: Uuid,
    pub(super) owner_id: String,
    pub(super) current_balance: Decimal,
    pub(super) total_deposits: Decimal,
    pub(super) total_withdrawals: Decimal,
    pub(super) transaction_count: i64,
    pub(super) last_transaction: OffsetDateTime,
    pub(super) created_at: OffsetDateTime,
    pub(super) version: i64,
    pub(super) status: String,
    pub(super) status_reason: Option<String>,
    /// The checkpoint the row is current as of.
    #[sqlx(flatten)]
    pub(super) as_of: Position,
}

impl SummaryRow {
    pub(super) fn into_view(self, stale: bool, served_by: ServedBy) -> AccountView {
        AccountView {
            served_by,
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

/// The checkpoint, and the account's row if the left join found one: the row's own columns are
/// decoded as a [`SummaryRow`] only when they are there.
pub(super) struct SummaryOrCheckpoint(pub(super) Option<SummaryRow>, pub(super) Position);

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for SummaryOrCheckpoint {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<SummaryOrCheckpoint, sqlx::Error> {
        use sqlx::Row;
        let found: Option<Uuid> = row.try_get("account_id")?;
        let summary = found.map(|_| SummaryRow::from_row(row)).transpose()?;
        Ok(SummaryOrCheckpoint(summary, Position::from_row(row)?))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TransferRow {
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
    pub(super) fn into_view(self) -> Result<TransferView, sqlx::Error> {
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
pub(super) struct LedgerRow {
    pub(super) version: i64,
    pub(super) kind: String,
    pub(super) amount: Decimal,
    pub(super) balance_after: Decimal,
    pub(super) recorded_at: OffsetDateTime,
}

impl LedgerRow {
    pub(super) fn into_entry(self) -> Result<LedgerEntry, sqlx::Error> {
        let kind = MovementKind::parse(&self.kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown ledger kind {:?}", self.kind).into()))?;
        Ok(LedgerEntry {
            version: self.version,
            kind,
            amount: self.amount,
            balance_after: self.balance_after,
            recorded_at: self.recorded_at,
        })
    }
}

/// The columns of an `account_summary` row `s` and of its checkpoint `c` that a [`SummaryRow`]
/// is read from.
macro_rules! summary_columns {
    () => {
        "s.account_id, s.owner_id, s.current_balance, s.total_deposits, s.total_withdrawals,
         s.transaction_count, s.last_transaction, s.created_at, s.version, s.status, s.status_reason,
         c.transaction_id, c.global_position"
    };
}

/// Columns of `account_summary s` joined with its checkpoint `c`, read through the event
/// store's `projection_checkpoint(name)` relation (public for the benchmark that compares the
/// query over HTTP with the statement alone).
pub const SUMMARY_SELECT: &str =
    concat!("SELECT ", summary_columns!(), " FROM account_summary s, projection_checkpoint($1) c");

/// One account's row `s` (if any) and the checkpoint `c`, in one statement: the row comes
/// with the checkpoint it is current as of, never one read later.
pub(super) const SUMMARY_OF_ONE: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM projection_checkpoint($1) c LEFT JOIN account_summary s ON s.account_id = $2"
);

/// Up to [`LIST_LIMIT`] rows of `account_summary s` that `filter` keeps, in `order`, and the
/// checkpoint they are current as of, in one statement: even no row at all comes with the
/// checkpoint it is current as of (one row of NULL account columns), never one read later.
pub(super) fn list_statement(filter: &str, order: &str) -> String {
    format!(
        "SELECT {} FROM projection_checkpoint($1) c
         LEFT JOIN LATERAL (SELECT * FROM account_summary s WHERE {filter} ORDER BY {order} LIMIT {LIST_LIMIT}) s
             ON true
         ORDER BY {order}",
        summary_columns!()
    )
}
