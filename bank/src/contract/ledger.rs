//! An account's money movements (the ledger) and its audit trail (the history), on the wire.

use eventstore::Position;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

use super::exact_number;

/// What moved an account's money: on the wire, and in the ledger's `kind` column, `opening`,
/// `deposit`, `withdrawal`, `transfer_out`, `transfer_in` or `refund`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// The initial balance of a new account.
    Opening,
    Deposit,
    Withdrawal,
    TransferOut,
    TransferIn,
    /// A transfer's money back, after its target refused it.
    Refund,
}

impl MovementKind {
    const ALL: [MovementKind; 6] = [
        MovementKind::Opening,
        MovementKind::Deposit,
        MovementKind::Withdrawal,
        MovementKind::TransferOut,
        MovementKind::TransferIn,
        MovementKind::Refund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Opening => "opening",
            MovementKind::Deposit => "deposit",
            MovementKind::Withdrawal => "withdrawal",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::Refund => "refund",
        }
    }

    pub fn parse(kind: &str) -> Option<MovementKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The kind in words, for people: `transfer out`, not `transfer_out`.
    pub fn in_words(self) -> &'static str {
        match self {
            MovementKind::TransferOut => "transfer out",
            MovementKind::TransferIn => "transfer in",
            other => other.as_str(),
        }
    }

    /// Whether it adds to the balance.
    pub fn is_money_in(self) -> bool {
        !matches!(self, MovementKind::Withdrawal | MovementKind::TransferOut)
    }
}

impl std::fmt::Display for MovementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One money movement of the `account_ledger` read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub version: i64,
    pub kind: MovementKind,
    #[serde(with = "exact_number")]
    pub amount: Decimal,
    #[serde(with = "exact_number")]
    pub balance_after: Decimal,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// An account's latest money movements, oldest first, as of the ledger's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    pub account_id: Uuid,
    pub entries: Vec<LedgerEntry>,
    pub as_of: Position,
}

/// The most days one statement covers (a year, and a leap day).
pub const STATEMENT_MAX_DAYS: i64 = 366;
/// The most movements one statement lists: a longer one is asked for in parts.
pub const STATEMENT_MAX_ENTRIES: usize = 10_000;

time::serde::format_description!(day, Date, "[year]-[month]-[day]");

/// The days a statement covers, from the first to the last (both included, UTC): parsed at the
/// edge from `YYYY-MM-DD`, at most [`STATEMENT_MAX_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementPeriod {
    #[serde(with = "day")]
    pub from: Date,
    #[serde(with = "day")]
    pub to: Date,
}

impl StatementPeriod {
    pub fn parse(from: &str, to: &str) -> Result<StatementPeriod, String> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let day = |name: &str, text: &str| {
            Date::parse(text, &format).map_err(|_| format!("{name} must be a date as YYYY-MM-DD, not {text:?}"))
        };
        StatementPeriod::new(day("from", from)?, day("to", to)?)
    }

    pub fn new(from: Date, to: Date) -> Result<StatementPeriod, String> {
        if to < from {
            return Err(format!("the statement's last day ({to}) is before its first ({from})"));
        }
        if (to - from).whole_days() >= STATEMENT_MAX_DAYS {
            return Err(format!("a statement covers at most {STATEMENT_MAX_DAYS} days; ask for a shorter period"));
        }
        Ok(StatementPeriod { from, to })
    }

    /// The first instant of the period, and the first after it (UTC midnights).
    pub fn instants(self) -> (OffsetDateTime, OffsetDateTime) {
        let start = self.from.midnight().assume_utc();
        let end = self.to.midnight().assume_utc() + Duration::days(1);
        (start, end)
    }
}

/// An account's statement for a period, from the ledger read model: the balance before it, every
/// movement in it (oldest first, each with the balance it left) and the balance after it. The
/// opening balance plus the movements (withdrawals and transfers out negative) is the closing
/// balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    pub account_id: Uuid,
    pub period: StatementPeriod,
    #[serde(with = "exact_number")]
    pub opening_balance: Decimal,
    pub entries: Vec<LedgerEntry>,
    #[serde(with = "exact_number")]
    pub closing_balance: Decimal,
    pub as_of: Position,
}

impl LedgerEntry {
    /// The amount as it changed the balance: negative for money out.
    pub fn signed_amount(&self) -> Decimal {
        if self.kind.is_money_in() { self.amount } else { -self.amount }
    }
}

/// One event of an account's audit trail, with the balance it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub version: i64,
    pub event_type: String,
    #[serde(with = "exact_number")]
    pub amount: Decimal,
    #[serde(with = "exact_number")]
    pub balance_after: Decimal,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub position: Position,
    pub command_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// Who sent the command (a username); `None` for events from before sign-in existed, and
    /// for a transfer's steps after its request (the transfer process sends them).
    #[serde(default)]
    pub actor: Option<String>,
    /// The transfer the event belongs to, and the account on its other side: the audit trail
    /// links the two sides of a transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty_account_id: Option<Uuid>,
    /// Why an account was frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A page of an account's audit trail, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub account_id: Uuid,
    /// The account's newest version.
    pub latest_version: i64,
    pub entries: Vec<HistoryEntry>,
    /// Pass as `beforeVersion` for the next (older) page; absent on the last page.
    pub next_before_version: Option<i64>,
}
