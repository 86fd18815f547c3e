//! Transfers on the wire: a request's answer and a transfer as the `transfers` read model knows it.

use eventstore::Position;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::exact_number;

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
    /// Where the next (older) page starts (`before`), when this one is full.
    #[serde(default)]
    pub next_page: Option<super::PageCursor>,
}

/// Whose account a transfer would go to, shown before it is sent so that a mistyped account
/// number is caught by a name the sender did not expect: the owner's name and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRecipient {
    pub account_id: Uuid,
    pub owner_id: String,
}
