//! What commands and queries answer, shared by the server and the browser.

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
}

/// Several accounts, read at one read-model checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
    pub as_of: Position,
}
