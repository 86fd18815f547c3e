//! A transfer: money moving from one account to another, without a transaction spanning both.
//!
//! Two parts, both pure:
//! - The transfer's own stream records how far it got: `TransferRequested` → `SourceDebited` →
//!   `TargetCredited` → `TransferCompleted`; or, when the target refuses the money (frozen,
//!   closed, too late), → `SourceRefunded` → `TransferFailed`; or, when the source refuses the
//!   debit (funds, status, too late), straight to `TransferFailed`.
//! - The process that drives it ([`next_step`], [`TransferStep::after`]): from the transfer's
//!   state alone it says which account command comes next, and what the transfer records once
//!   that account answered. Every such command has an id made of the transfer's id and the
//!   step's name, so however often a step is taken (a crash, a second leader, a redelivered
//!   event), the account applies it once and answers every repeat with its first answer.
//!
//! The accounts are the arbiters: a credit either happened or was refused, once, in the target
//! account's stream, and the deadline is checked there too — so a deadline that fires while a
//! credit is on its way cannot refund money that also arrived.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::account::{AccountCommand, CommandBy, DomainError, OwnerId, Sender};
use super::money::Amount;

/// What a transfer is: fixed when it is requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferTerms {
    pub from: Uuid,
    pub to: Uuid,
    pub amount: Amount,
    /// The customer who asked; the debit is theirs to send (they must own `from`).
    pub requested_by: OwnerId,
    /// Not completed by then, the transfer is undone: no step is taken after it.
    pub deadline: OffsetDateTime,
}

/// How far a transfer got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferStage {
    Requested,
    SourceDebited,
    TargetCredited,
    Completed,
    SourceRefunded { reason: String },
    Failed { reason: String },
}

impl TransferStage {
    /// As the transfers read model stores it and the contract spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransferStage::Requested => "requested",
            TransferStage::SourceDebited => "debited",
            TransferStage::TargetCredited => "credited",
            TransferStage::Completed => "completed",
            TransferStage::SourceRefunded { .. } => "refunded",
            TransferStage::Failed { .. } => "failed",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, TransferStage::Completed | TransferStage::Failed { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TransferState {
    #[default]
    NotRequested,
    Known {
        terms: TransferTerms,
        stage: TransferStage,
    },
}

/// What is asked of a transfer: by a customer (`Request`), then by the process, which records
/// each step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    Request(TransferTerms),
    RecordDebit,
    RecordDebitRefused { reason: String },
    RecordCredit,
    RecordRefund { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    TransferRequested(TransferTerms),
    SourceDebited,
    TargetCredited,
    TransferCompleted,
    SourceRefunded { reason: String },
    TransferFailed { reason: String },
}

impl TransferEvent {
    pub const TYPES: &'static [&'static str] = &[
        "TransferRequested",
        "SourceDebited",
        "TargetCredited",
        "TransferCompleted",
        "SourceRefunded",
        "TransferFailed",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            TransferEvent::TransferRequested(_) => Self::TYPES[0],
            TransferEvent::SourceDebited => Self::TYPES[1],
            TransferEvent::TargetCredited => Self::TYPES[2],
            TransferEvent::TransferCompleted => Self::TYPES[3],
            TransferEvent::SourceRefunded { .. } => Self::TYPES[4],
            TransferEvent::TransferFailed { .. } => Self::TYPES[5],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TransferRefusal {
    #[error("a transfer needs two different accounts")]
    SameAccount,
    #[error("the transfer was requested already")]
    AlreadyRequested,
    #[error("no such transfer")]
    NotFound,
    /// A step's outcome recorded at the wrong stage: the transfer moved on without it.
    #[error("the transfer is {stage}: this step's outcome does not fit")]
    OutOfStep { stage: String },
}

pub fn decide(state: &TransferState, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferRefusal> {
    use TransferCommand as C;
    use TransferEvent as E;
    let stage = match (state, command) {
        (TransferState::NotRequested, C::Request(terms)) if terms.from == terms.to => {
            return Err(TransferRefusal::SameAccount);
        }
        (TransferState::NotRequested, C::Request(terms)) => return Ok(vec![E::TransferRequested(terms.clone())]),
        (TransferState::NotRequested, _) => return Err(TransferRefusal::NotFound),
        (TransferState::Known { .. }, C::Request(_)) => return Err(TransferRefusal::AlreadyRequested),
        (TransferState::Known { stage, .. }, _) => stage,
    };
    match (stage, command) {
        (TransferStage::Requested, C::RecordDebit) => Ok(vec![E::SourceDebited]),
        (TransferStage::Requested, C::RecordDebitRefused { reason }) => {
            Ok(vec![E::TransferFailed { reason: reason.clone() }])
        }
        (TransferStage::SourceDebited, C::RecordCredit) => Ok(vec![E::TargetCredited, E::TransferCompleted]),
        (TransferStage::SourceDebited, C::RecordRefund { reason }) => {
            Ok(vec![E::SourceRefunded { reason: reason.clone() }, E::TransferFailed { reason: reason.clone() }])
        }
        (stage, _) => Err(TransferRefusal::OutOfStep { stage: stage.as_str().to_owned() }),
    }
}

pub fn evolve(state: TransferState, event: &TransferEvent) -> TransferState {
    use TransferEvent as E;
    match (state, event) {
        (TransferState::NotRequested, E::TransferRequested(terms)) => {
            TransferState::Known { terms: terms.clone(), stage: TransferStage::Requested }
        }
        (TransferState::Known { terms, stage }, event) => {
            let stage = match (stage, event) {
                (TransferStage::Requested, E::SourceDebited) => TransferStage::SourceDebited,
                (TransferStage::SourceDebited, E::TargetCredited) => TransferStage::TargetCredited,
                (TransferStage::TargetCredited, E::TransferCompleted) => TransferStage::Completed,
                (TransferStage::SourceDebited, E::SourceRefunded { reason }) => {
                    TransferStage::SourceRefunded { reason: reason.clone() }
                }
                (TransferStage::Requested | TransferStage::SourceRefunded { .. }, E::TransferFailed { reason }) => {
                    TransferStage::Failed { reason: reason.clone() }
                }
                // An event that does not fit is ignored, as the account's fold does.
                (stage, _) => stage,
            };
            TransferState::Known { terms, stage }
        }
        (state, _) => state,
    }
}

/// The account command a transfer needs next. Each is named, and the name is part of its
/// command id: see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStep {
    pub kind: StepKind,
    pub account_id: Uuid,
    pub command: CommandBy,
    /// The transfer's source and amount: where a refused credit's money goes back to.
    pub source: Uuid,
    pub amount: Amount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Debit,
    Credit,
}

impl StepKind {
    /// The step's name, in its command id.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Debit => "debit",
            StepKind::Credit => "credit",
        }
    }

    /// The name of the command that records the step's outcome in the transfer's stream: one
    /// per step, whatever the outcome, so that only one outcome can ever be recorded.
    pub fn outcome_name(self) -> &'static str {
        match self {
            StepKind::Debit => "debit-outcome",
            StepKind::Credit => "credit-outcome",
        }
    }
}

/// The name of the refund's command, in its command id.
pub const REFUND_STEP: &str = "refund";

/// What the process does once an account answered a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStep {
    /// Record the step's outcome in the transfer's stream.
    Record(TransferCommand),
    /// The target refused the money: give it back to the source (an account command named
    /// [`REFUND_STEP`]), then record that.
    Refund { account_id: Uuid, command: CommandBy, then: TransferCommand },
}

/// The next account command of a transfer in `state`, as of `now`; `None` when it needs none
/// (finished, or not requested). Decided from the state alone — never from the event that
/// woke the process — so an event delivered twice or late asks for nothing new: a step already
/// recorded is not planned again, and one taken but not yet recorded is taken again and
/// answered by the account as the first time.
pub fn next_step(transfer_id: Uuid, state: &TransferState, now: OffsetDateTime) -> Option<TransferStep> {
    let TransferState::Known { terms, stage } = state else {
        return None;
    };
    match stage {
        TransferStage::Requested => Some(TransferStep {
            kind: StepKind::Debit,
            account_id: terms.from,
            command: CommandBy {
                by: Sender::Customer(terms.requested_by.clone()),
                command: AccountCommand::DebitForTransfer {
                    transfer_id,
                    to: terms.to,
                    amount: terms.amount,
                    at: now,
                    deadline: terms.deadline,
                },
            },
            source: terms.from,
            amount: terms.amount,
        }),
        TransferStage::SourceDebited => Some(TransferStep {
            kind: StepKind::Credit,
            account_id: terms.to,
            command: CommandBy {
                by: Sender::TransferProcess,
                command: AccountCommand::CreditForTransfer {
                    transfer_id,
                    from: terms.from,
                    amount: terms.amount,
                    at: now,
                    deadline: terms.deadline,
                },
            },
            source: terms.from,
            amount: terms.amount,
        }),
        // Recorded together with the step before; nothing is taken in between.
        TransferStage::TargetCredited | TransferStage::SourceRefunded { .. } => None,
        TransferStage::Completed | TransferStage::Failed { .. } => None,
    }
}

impl TransferStep {
    /// What follows the account's answer: `Ok` when it applied the step, else its refusal.
    pub fn after(&self, transfer_id: Uuid, answer: Result<(), &DomainError>) -> AfterStep {
        match (self.kind, answer) {
            (StepKind::Debit, Ok(())) => AfterStep::Record(TransferCommand::RecordDebit),
            (StepKind::Debit, Err(refusal)) => AfterStep::Record(TransferCommand::RecordDebitRefused {
                reason: format!("the source account refused: {}", public_reason(refusal)),
            }),
            (StepKind::Credit, Ok(())) => AfterStep::Record(TransferCommand::RecordCredit),
            (StepKind::Credit, Err(refusal)) => AfterStep::Refund {
                account_id: self.source,
                command: CommandBy {
                    by: Sender::TransferProcess,
                    command: AccountCommand::RefundTransfer { transfer_id, amount: self.amount },
                },
                then: TransferCommand::RecordRefund {
                    reason: format!("the target account refused: {}", public_reason(refusal)),
                },
            },
        }
    }
}

/// What both sides of a transfer are told of an account's refusal: never the account's own
/// words, which carry its balance or the operator's reason for freezing it, and which the other
/// side has no business reading.
fn public_reason(refusal: &DomainError) -> &'static str {
    match refusal {
        DomainError::InsufficientFunds { .. } => "insufficient funds",
        DomainError::AccountFrozen { .. } | DomainError::AccountClosed => {
            "it does not take transfers now (frozen or closed)"
        }
        DomainError::TransferExpired => "the transfer's deadline passed",
        DomainError::BalanceLimitExceeded => "its balance would pass the limit",
        DomainError::AccountNotFound => "it does not exist",
        DomainError::AccountAlreadyExists
        | DomainError::NotFrozen
        | DomainError::BalanceNotZero { .. }
        | DomainError::AccountNotClosed => "refused",
    }
}

#[cfg(test)]
mod tests;
