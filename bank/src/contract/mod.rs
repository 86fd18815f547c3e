//! The wire types: what commands and queries answer, as the HTTP contract spells them. Shared
//! by the server and the browser, and by the layers inside the server (the write side and the
//! read side build them; the API sends them), so that no inner layer imports the API.

pub mod exact_number;

use eventstore::Position;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

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

/// A transfer request's answer: the transfer's id (its stream), its version and the
/// consistency token of its first event. The transfer then goes on by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferAccepted {
    pub transfer_id: Uuid,
    pub version: i64,
    pub position: Position,
}

/// How far a transfer got, on the wire and in the `transfers` read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferStateView {
    /// Asked for; the source is not debited yet.
    Requested,
    /// The money left the source and is on its way.
    Debited,
    /// The target got the money.
    Completed,
    /// Undone: the source refused the debit, or the target the credit (then the money went
    /// back: `refundedAt`).
    Failed,
}

impl TransferStateView {
    pub fn parse(state: &str) -> Option<TransferStateView> {
        match state {
            "requested" => Some(TransferStateView::Requested),
            "debited" => Some(TransferStateView::Debited),
            "completed" => Some(TransferStateView::Completed),
            "failed" => Some(TransferStateView::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransferStateView::Requested => "requested",
            TransferStateView::Debited => "debited",
            TransferStateView::Completed => "completed",
            TransferStateView::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, TransferStateView::Completed | TransferStateView::Failed)
    }
}

/// One transfer as the `transfers` read model knows it, with the time of each step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferView {
    pub transfer_id: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    #[serde(with = "exact_number")]
    pub amount: Decimal,
    pub state: TransferStateView,
    /// Why it failed.
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub debited_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub credited_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub refunded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// An account's transfers, sent and received, newest first, read at one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferList {
    pub account_id: Uuid,
    pub transfers: Vec<TransferView>,
    pub as_of: Position,
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

/// One message of the live stream (`GET /api/live`, server-sent events named `progress`): the
/// account read model moved to `position`, and these accounts changed on the way (`opened`:
/// those among them that are new). With `everything`, too much changed to name (or a message
/// was lost): refetch whatever is shown. The message's SSE id is the position, so a reconnecting
/// client's `Last-Event-ID` resumes right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveProgress {
    pub position: Position,
    pub accounts: Vec<Uuid>,
    pub opened: Vec<Uuid>,
    pub everything: bool,
}

impl LiveProgress {
    /// "Refetch whatever is shown", as the browser tells its pages on (re)connecting.
    pub fn everything() -> LiveProgress {
        LiveProgress { position: Position::START, accounts: Vec::new(), opened: Vec::new(), everything: true }
    }

    /// Whether a page showing `account` should read it again.
    pub fn concerns(&self, account: Uuid) -> bool {
        self.everything || self.accounts.contains(&account)
    }
}

/// Who is signed in, as pages and clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedIn {
    pub username: String,
    /// `customer` or `operator`.
    pub role: Role,
}

/// What a user may do: customers use their own accounts; operators also see every account and
/// run the read side's levers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "customer" => Some(Role::Customer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// An API token as its owner sees it in the list: never the secret, which is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenInfo {
    pub token_id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewApiToken {
    pub token_id: Uuid,
    pub name: String,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// How far the accounts' read model is behind the event store: what every signed-in user may
/// know of the read side (operators see the whole status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadModelLag {
    pub lag_events: i64,
    pub lag_seconds: f64,
}
