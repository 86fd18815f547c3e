//! The bank's rules, pure: no I/O, no async, no framework. Compiled for the server and for the
//! browser, so the browser validates input with exactly the code the server uses.
//!
//! - [`account`]: one account — what may happen to it, and what did.
//! - [`transfer`]: money moving between two accounts — the transfer's own record, and the
//!   process that drives it from one account to the other (or back).

pub mod account;
#[cfg(test)]
pub(crate) mod given_when_then;
pub mod money;
#[cfg(test)]
pub(crate) mod properties;
pub mod transfer;

pub use account::{
    AccountCommand, AccountEvent, AccountState, AccountStatus, CommandBy, DomainError, FORGOTTEN, Movement, OwnerId,
    OwnerIdError, Reason, ReasonError, Sender, decide, decide_for, evolve, forget_owner,
};
pub use money::{Amount, Balance, CURRENCY, Money, MoneyError};
pub use transfer::{
    TransferCommand, TransferEvent, TransferRefusal, TransferStage, TransferState, TransferStep, TransferTerms,
};
