//! The account aggregate: what may happen to an account, decided without any I/O.
//!
//! `decide` answers a command with the events it causes (or a refusal); `evolve` folds one event
//! into the state. Loading an account is `events.fold(AccountState::default(), evolve)`; handling
//! a command is `decide(&state, &command)` followed by an append at the state's version. Nothing
//! here knows about Postgres, HTTP or Leptos.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::money::{Amount, Balance, Money};

mod texts;
pub use texts::{FORGOTTEN, OwnerId, OwnerIdError, Reason, ReasonError};

/// What is asked of one account. The values inside are already valid: parsing happened at the
/// edge, so the rules left here are the ones that need the account's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    CreateAccount {
        owner_id: OwnerId,
        initial_balance: Money,
    },
    Deposit {
        amount: Amount,
    },
    Withdraw {
        amount: Amount,
    },
    /// A transfer's first step: take the money from its source. `at` is when the step runs; a
    /// step after the transfer's `deadline` is refused, so that a deadline that fired (and
    /// compensated) cannot be overtaken by a late step.
    DebitForTransfer {
        transfer_id: Uuid,
        to: Uuid,
        amount: Amount,
        at: OffsetDateTime,
        deadline: OffsetDateTime,
    },
    /// A transfer's second step: give the money to its target, if it takes it in time.
    CreditForTransfer {
        transfer_id: Uuid,
        from: Uuid,
        amount: Amount,
        at: OffsetDateTime,
        deadline: OffsetDateTime,
    },
    /// A transfer's compensation: the debited money goes back to its source.
    RefundTransfer {
        transfer_id: Uuid,
        amount: Amount,
    },
    Freeze {
        reason: Reason,
    },
    Unfreeze,
    Close,
}

/// Who sends a command; each may send some commands only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A customer: opens accounts in their own name, and moves (and closes) their own only.
    Customer(OwnerId),
    /// An operator: freezes and unfreezes any account; moves nobody else's money.
    Operator(OwnerId),
    /// The transfer process: credits targets and refunds sources. (A transfer's debit is sent
    /// as the customer who asked for the transfer, so the owner rule holds for it too.)
    TransferProcess,
}

/// A command and who sends it. Someone not allowed to send it to this account is told the
/// account does not exist (which does not tell them that it does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandBy {
    pub by: Sender,
    pub command: AccountCommand,
}

/// What happened to an account. Stored as is, forever: change a shape only with a new
/// schema version and an upcaster, never in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountCreated {
        owner_id: OwnerId,
        initial_balance: Money,
    },
    MoneyDeposited {
        amount: Amount,
    },
    MoneyWithdrawn {
        amount: Amount,
    },
    /// Money left for a transfer to `to`.
    TransferDebited {
        transfer_id: Uuid,
        to: Uuid,
        amount: Amount,
    },
    /// Money arrived by a transfer from `from`.
    TransferCredited {
        transfer_id: Uuid,
        from: Uuid,
        amount: Amount,
    },
    /// Money of a transfer that could not be delivered came back.
    TransferRefunded {
        transfer_id: Uuid,
        amount: Amount,
    },
    AccountFrozen {
        reason: Reason,
    },
    AccountUnfrozen,
    AccountClosed,
    /// The owner asked to be forgotten (or an operator did it for them): from here on the
    /// account's owner reads as [`OwnerId::forgotten`]. The events before it are not rewritten;
    /// their personal fields were sealed with a key that is now destroyed, and this event
    /// re-states, for what was written in clear before sealing existed, that it is gone.
    OwnerForgotten,
}

/// How an event moves an account's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// The account's first balance.
    Opening(Money),
    /// Money in: a deposit, a transfer received, a refund.
    In(Amount),
    /// Money out: a withdrawal, a transfer sent.
    Out(Amount),
}

impl AccountEvent {
    /// Every account event type, as stored: what the account read models declare they read.
    pub const TYPES: &'static [&'static str] = &[
        "AccountCreated",
        "MoneyDeposited",
        "MoneyWithdrawn",
        "TransferDebited",
        "TransferCredited",
        "TransferRefunded",
        "AccountFrozen",
        "AccountUnfrozen",
        "AccountClosed",
        "OwnerForgotten",
    ];

    /// The name stored in the event store's `event_type` column.
    pub fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountCreated { .. } => Self::TYPES[0],
            AccountEvent::MoneyDeposited { .. } => Self::TYPES[1],
            AccountEvent::MoneyWithdrawn { .. } => Self::TYPES[2],
            AccountEvent::TransferDebited { .. } => Self::TYPES[3],
            AccountEvent::TransferCredited { .. } => Self::TYPES[4],
            AccountEvent::TransferRefunded { .. } => Self::TYPES[5],
            AccountEvent::AccountFrozen { .. } => Self::TYPES[6],
            AccountEvent::AccountUnfrozen => Self::TYPES[7],
            AccountEvent::AccountClosed => Self::TYPES[8],
            AccountEvent::OwnerForgotten => Self::TYPES[9],
        }
    }

    /// What the event does to the balance; `None` for a change of status only.
    pub fn movement(&self) -> Option<Movement> {
        match self {
            AccountEvent::AccountCreated { initial_balance, .. } => Some(Movement::Opening(*initial_balance)),
            AccountEvent::MoneyDeposited { amount }
            | AccountEvent::TransferCredited { amount, .. }
            | AccountEvent::TransferRefunded { amount, .. } => Some(Movement::In(*amount)),
            AccountEvent::MoneyWithdrawn { amount } | AccountEvent::TransferDebited { amount, .. } => {
                Some(Movement::Out(*amount))
            }
            AccountEvent::AccountFrozen { .. }
            | AccountEvent::AccountUnfrozen
            | AccountEvent::AccountClosed
            | AccountEvent::OwnerForgotten => None,
        }
    }

    /// The status the account has after the event, if the event changes it (from `before`).
    pub fn status_after(&self, before: &AccountStatus) -> Option<AccountStatus> {
        match self {
            AccountEvent::AccountFrozen { reason } => Some(AccountStatus::Frozen { reason: reason.clone() }),
            AccountEvent::AccountUnfrozen => Some(AccountStatus::Active),
            AccountEvent::AccountClosed => Some(AccountStatus::Closed),
            // Money that comes back is never refused, and a closed account that gets some is
            // open again: its owner can then withdraw it (see `decide`).
            AccountEvent::TransferRefunded { .. } if *before == AccountStatus::Closed => Some(AccountStatus::Active),
            _ => None,
        }
    }
}

/// Whether an account takes commands.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AccountStatus {
    #[default]
    Active,
    /// By an operator: no money moves in or out (refunds aside) until it is unfrozen.
    Frozen { reason: Reason },
    /// By its owner, at a zero balance: nothing moves (refunds aside).
    Closed,
}

impl AccountStatus {
    /// As the read models store it and the contract spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen { .. } => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            AccountStatus::Frozen { reason } => Some(reason),
            _ => None,
        }
    }
}

/// An account as folded from its events: what the rules need (owner, balance) and the totals
/// a statement shows, so that the account at any version, snapshots included, carries them.
/// Serialisable because snapshots store it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AccountState {
    #[default]
    NotCreated,
    Open {
        owner_id: OwnerId,
        balance: Balance,
        /// The initial balance counts as the first deposit, as in the seed's read model.
        total_deposits: Decimal,
        total_withdrawals: Decimal,
        /// Snapshots made before accounts had a status are of active accounts.
        #[serde(default)]
        status: AccountStatus,
    },
}

impl AccountState {
    pub fn balance(&self) -> Option<Balance> {
        match self {
            AccountState::NotCreated => None,
            AccountState::Open { balance, .. } => Some(*balance),
        }
    }

    pub fn owner_id(&self) -> Option<&OwnerId> {
        match self {
            AccountState::NotCreated => None,
            AccountState::Open { owner_id, .. } => Some(owner_id),
        }
    }
}

/// A command the account refuses. Each one is the client's to fix, never a server fault.
/// Serialisable because a refusal is remembered and given again to a retried command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DomainError {
    #[error("the account already exists")]
    AccountAlreadyExists,
    #[error("the account does not exist")]
    AccountNotFound,
    #[error("insufficient funds: balance {balance}, withdrawal {requested}")]
    InsufficientFunds { balance: Balance, requested: Amount },
    #[error("the deposit would take the balance beyond {}", Balance::MAX)]
    BalanceLimitExceeded,
    #[error("the account is frozen: {reason}")]
    AccountFrozen { reason: Reason },
    #[error("the account is closed")]
    AccountClosed,
    #[error("the account is not frozen")]
    NotFrozen,
    #[error("an account is closed at a zero balance only; the balance is {balance}")]
    BalanceNotZero { balance: Balance },
    #[error("the transfer's deadline passed")]
    TransferExpired,
    #[error("the account is not closed: an owner is forgotten once all their accounts are closed")]
    AccountNotClosed,
}

/// The events that forget an account's owner: none if it is forgotten already; refused while
/// the account is open (money with no one to claim it would be stranded).
pub fn forget_owner(state: &AccountState) -> Result<Vec<AccountEvent>, DomainError> {
    match state {
        AccountState::NotCreated => Err(DomainError::AccountNotFound),
        AccountState::Open { owner_id, .. } if owner_id.is_forgotten() => Ok(vec![]),
        AccountState::Open { status: AccountStatus::Closed, .. } => Ok(vec![AccountEvent::OwnerForgotten]),
        AccountState::Open { .. } => Err(DomainError::AccountNotClosed),
    }
}

pub fn decide(state: &AccountState, command: &AccountCommand) -> Result<Vec<AccountEvent>, DomainError> {
    use AccountCommand as C;
    let (balance, status) = match (state, command) {
        (AccountState::NotCreated, C::CreateAccount { owner_id, initial_balance }) => {
            return Ok(vec![AccountEvent::AccountCreated {
                owner_id: owner_id.clone(),
                initial_balance: *initial_balance,
            }]);
        }
        (AccountState::NotCreated, _) => return Err(DomainError::AccountNotFound),
        (AccountState::Open { balance, status, .. }, _) => (*balance, status),
    };
    // Money that comes back is taken whatever the account's status: it was the account's.
    let refund = matches!(command, C::RefundTransfer { .. });
    match status {
        AccountStatus::Closed if !refund => return Err(DomainError::AccountClosed),
        AccountStatus::Frozen { reason } if !refund && *command != C::Unfreeze => {
            return Err(DomainError::AccountFrozen { reason: reason.clone() });
        }
        _ => {}
    }
    let expired = |at: &OffsetDateTime, deadline: &OffsetDateTime| at > deadline;
    let event = match command {
        C::CreateAccount { .. } => return Err(DomainError::AccountAlreadyExists),
        C::RefundTransfer { transfer_id, amount } => {
            balance.checked_add(*amount).ok_or(DomainError::BalanceLimitExceeded)?;
            AccountEvent::TransferRefunded { transfer_id: *transfer_id, amount: *amount }
        }
        C::Deposit { amount } => {
            balance.checked_add(*amount).ok_or(DomainError::BalanceLimitExceeded)?;
            AccountEvent::MoneyDeposited { amount: *amount }
        }
        C::Withdraw { amount } => {
            balance.checked_sub(*amount).ok_or(DomainError::InsufficientFunds { balance, requested: *amount })?;
            AccountEvent::MoneyWithdrawn { amount: *amount }
        }
        C::DebitForTransfer { transfer_id, to, amount, at, deadline } => {
            if expired(at, deadline) {
                return Err(DomainError::TransferExpired);
            }
            balance.checked_sub(*amount).ok_or(DomainError::InsufficientFunds { balance, requested: *amount })?;
            AccountEvent::TransferDebited { transfer_id: *transfer_id, to: *to, amount: *amount }
        }
        C::CreditForTransfer { transfer_id, from, amount, at, deadline } => {
            if expired(at, deadline) {
                return Err(DomainError::TransferExpired);
            }
            balance.checked_add(*amount).ok_or(DomainError::BalanceLimitExceeded)?;
            AccountEvent::TransferCredited { transfer_id: *transfer_id, from: *from, amount: *amount }
        }
        C::Freeze { reason } => AccountEvent::AccountFrozen { reason: reason.clone() },
        C::Unfreeze if matches!(status, AccountStatus::Frozen { .. }) => AccountEvent::AccountUnfrozen,
        C::Unfreeze => return Err(DomainError::NotFrozen),
        C::Close if balance != Balance::ZERO => return Err(DomainError::BalanceNotZero { balance }),
        C::Close => AccountEvent::AccountClosed,
    };
    Ok(vec![event])
}

/// [`decide`] for a command someone sent: each sender may send some commands only (see
/// [`Sender`]), and a customer only to their own accounts.
pub fn decide_for(state: &AccountState, sent: &CommandBy) -> Result<Vec<AccountEvent>, DomainError> {
    use AccountCommand as C;
    let allowed = match (&sent.by, &sent.command) {
        // Nobody is the forgotten owner (a transfer requested before its requester was forgotten
        // would otherwise still be sent as them).
        (Sender::Customer(by), _) if by.is_forgotten() => false,
        (Sender::Customer(by), C::CreateAccount { owner_id, .. }) => by == owner_id,
        (Sender::Customer(by), C::Deposit { .. } | C::Withdraw { .. } | C::DebitForTransfer { .. } | C::Close) => {
            state.owner_id().is_none_or(|owner| owner == by)
        }
        (Sender::Operator(_), C::Freeze { .. } | C::Unfreeze) => true,
        (Sender::TransferProcess, C::CreditForTransfer { .. } | C::RefundTransfer { .. }) => true,
        _ => false,
    };
    if !allowed {
        return Err(DomainError::AccountNotFound);
    }
    decide(state, &sent.command)
}

/// Folds one event into the state. Events are facts that already passed `decide`, so an event
/// that does not fit the state (a deposit to an account never created, a withdrawal beyond the
/// balance) means the store is corrupt; it is ignored here, whole — the balance and the totals
/// stay in step — and caught by the event store's own guarantees, not by panicking in the
/// middle of a fold.
pub fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
    match (state, event) {
        (AccountState::NotCreated, AccountEvent::AccountCreated { owner_id, initial_balance }) => AccountState::Open {
            owner_id: owner_id.clone(),
            balance: Balance::from(*initial_balance),
            total_deposits: initial_balance.value(),
            total_withdrawals: Decimal::ZERO,
            status: AccountStatus::Active,
        },
        (
            AccountState::Open { balance, total_deposits, total_withdrawals, status, .. },
            AccountEvent::OwnerForgotten,
        ) => AccountState::Open { owner_id: OwnerId::forgotten(), balance, total_deposits, total_withdrawals, status },
        (AccountState::Open { owner_id, balance, total_deposits, total_withdrawals, status }, event) => {
            let moved = match event.movement() {
                Some(Movement::In(amount)) => {
                    balance.checked_add(amount).map(|b| (b, total_deposits + amount.value(), total_withdrawals))
                }
                Some(Movement::Out(amount)) => {
                    balance.checked_sub(amount).map(|b| (b, total_deposits, total_withdrawals + amount.value()))
                }
                // An account is created once: a second creation is ignored like any misfit.
                Some(Movement::Opening(_)) | None => Some((balance, total_deposits, total_withdrawals)),
            };
            let status_after = event.status_after(&status);
            match moved {
                Some((balance, total_deposits, total_withdrawals)) => AccountState::Open {
                    owner_id,
                    balance,
                    total_deposits,
                    total_withdrawals,
                    status: status_after.unwrap_or(status),
                },
                None => AccountState::Open { owner_id, balance, total_deposits, total_withdrawals, status },
            }
        }
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests;
