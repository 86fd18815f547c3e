//! Accounts on the wire: a command's answer, an account as the read model or the log knows it, and which store answered.

use eventstore::Position;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::exact_number;

/// A command's answer: the account, its new stream version and the consistency token (the
/// position of the command's last event). A query asked with `after=<position>` waits until
/// the read model has caught up with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandAccepted {
    pub account_id: Uuid,
    pub version: i64,
    pub position: Position,
}

/// One account as the read model knows it, and how current that knowledge is.
///
/// Flat on purpose (no `#[serde(flatten)]`): flattening buffers numbers through `f64`, which
/// would make amounts inexact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub account_id: Uuid,
    pub owner_id: String,
    #[serde(with = "exact_number")]
    pub current_balance: Decimal,
    #[serde(with = "exact_number")]
    pub total_deposits: Decimal,
    #[serde(with = "exact_number")]
    pub total_withdrawals: Decimal,
    pub transaction_count: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub last_transaction: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The account's stream version this row reflects.
    pub version: i64,
    /// The read model's checkpoint when the row was read.
    pub as_of: Position,
    /// True when the query asked for `after=<position>` and the read model had not caught up
    /// within the wait bound: the row may miss the caller's latest commands.
    pub stale: bool,
    /// The read store the row came from.
    #[serde(default)]
    pub served_by: ServedBy,
    /// Whether the account takes commands: `active`, `frozen` (by an operator, with
    /// `statusReason`) or `closed` (by its owner).
    #[serde(default)]
    pub status: AccountStatusView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

/// An account's status, as the read model knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatusView {
    #[default]
    Active,
    Frozen,
    Closed,
}

impl AccountStatusView {
    pub fn parse(status: &str) -> Option<AccountStatusView> {
        match status {
            "active" => Some(AccountStatusView::Active),
            "frozen" => Some(AccountStatusView::Frozen),
            "closed" => Some(AccountStatusView::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatusView::Active => "active",
            AccountStatusView::Frozen => "frozen",
            AccountStatusView::Closed => "closed",
        }
    }
}

/// Which read store answered a query: both hold the same read model, each as of its own
/// checkpoint (`asOf`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServedBy {
    #[default]
    Postgres,
    Redis,
    /// A hot standby of the Postgres database (`DATABASE_READ_URL`).
    #[serde(rename = "postgres-replica")]
    PostgresReplica,
}

impl ServedBy {
    pub fn label(self) -> &'static str {
        match self {
            ServedBy::Postgres => "Postgres",
            ServedBy::Redis => "Redis",
            ServedBy::PostgresReplica => "the Postgres replica",
        }
    }
}

/// The Postgres replica queries read (`DATABASE_READ_URL`), as an instance last measured it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// It answered the last measurement, as a standby.
    pub reachable: bool,
    /// Write-ahead log the primary has written and the replica has not replayed yet.
    pub lag_bytes: Option<i64>,
    /// While it is behind by any byte, how long ago it replayed its last commit; 0 otherwise.
    pub lag_seconds: Option<f64>,
    /// Queries read it now: reachable, and no further behind than allowed.
    pub serving: bool,
    /// Why it does not serve, if it does not.
    pub problem: Option<String>,
}

/// Several accounts, read at one read-model checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
    pub as_of: Position,
    #[serde(default)]
    pub served_by: ServedBy,
    /// Where the next page starts (`before`), when this one is full: there may be more.
    #[serde(default)]
    pub next_page: Option<super::PageCursor>,
}

/// An account as it was at one version, folded from the event store (not the read model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoricalAccount {
    pub account_id: Uuid,
    pub owner_id: String,
    #[serde(with = "exact_number")]
    pub balance: Decimal,
    #[serde(with = "exact_number")]
    pub total_deposits: Decimal,
    #[serde(with = "exact_number")]
    pub total_withdrawals: Decimal,
    /// Every event is one transaction: the account's creation counts as the first.
    pub transaction_count: i64,
    pub version: i64,
    /// When that version was recorded: the last transaction as of then.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The account's newest version, for comparison.
    pub latest_version: i64,
}
