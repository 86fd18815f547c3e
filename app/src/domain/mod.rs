//! The bank's rules, pure: no I/O, no async, no framework. Compiled for the server and for the
//! browser, so the browser validates input with exactly the code the server uses.

pub mod account;
pub mod money;
#[cfg(test)]
pub(crate) mod properties;

pub use account::{
    AccountCommand, AccountEvent, AccountState, CommandBy, DomainError, OwnerId, OwnerIdError, decide, decide_for,
    evolve,
};
pub use money::{Amount, Balance, Money, MoneyError};
