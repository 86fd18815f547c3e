//! The account aggregate: what may happen to an account, decided without any I/O.
//!
//! `decide` answers a command with the events it causes (or a refusal); `evolve` folds one event
//! into the state. Loading an account is `events.fold(AccountState::default(), evolve)`; handling
//! a command is `decide(&state, &command)` followed by an append at the state's version. Nothing
//! here knows about Postgres, HTTP or Leptos.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::{Amount, Balance, Money};

/// Who owns an account: a non-empty name of at most [`OwnerId::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerIdError {
    #[error("the owner must not be empty")]
    Empty,
    #[error("the owner must be at most 100 characters long")]
    TooLong,
    #[error("the owner must not contain control characters")]
    ControlCharacter,
}

impl OwnerId {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<OwnerId, OwnerIdError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(OwnerIdError::Empty);
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(OwnerIdError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(OwnerIdError::ControlCharacter);
        }
        Ok(OwnerId(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OwnerId {
    type Error = OwnerIdError;
    fn try_from(value: String) -> Result<OwnerId, OwnerIdError> {
        OwnerId::parse(&value)
    }
}

impl From<OwnerId> for String {
    fn from(owner: OwnerId) -> String {
        owner.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a client asks of one account. The values inside are already valid: parsing happened at
/// the edge, so the rules left here are the ones that need the account's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    CreateAccount { owner_id: OwnerId, initial_balance: Money },
    Deposit { amount: Amount },
    Withdraw { amount: Amount },
}

/// A command and who sends it: the owner names themselves, anyone else is told the account does
/// not exist (which does not tell them that it does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandBy {
    pub by: OwnerId,
    pub command: AccountCommand,
}

/// What happened to an account. Stored as is, forever: change a shape only with a new
/// schema version and an upcaster, never in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountCreated { owner_id: OwnerId, initial_balance: Money },
    MoneyDeposited { amount: Amount },
    MoneyWithdrawn { amount: Amount },
}

impl AccountEvent {
    /// Every account event type, as stored: what the account read models declare they read.
    pub const TYPES: &'static [&'static str] = &["AccountCreated", "MoneyDeposited", "MoneyWithdrawn"];

    /// The name stored in the event store's `event_type` column.
    pub fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountCreated { .. } => Self::TYPES[0],
            AccountEvent::MoneyDeposited { .. } => Self::TYPES[1],
            AccountEvent::MoneyWithdrawn { .. } => Self::TYPES[2],
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
}

pub fn decide(state: &AccountState, command: &AccountCommand) -> Result<Vec<AccountEvent>, DomainError> {
    match (state, command) {
        (AccountState::NotCreated, AccountCommand::CreateAccount { owner_id, initial_balance }) => {
            Ok(vec![AccountEvent::AccountCreated { owner_id: owner_id.clone(), initial_balance: *initial_balance }])
        }
        (AccountState::Open { .. }, AccountCommand::CreateAccount { .. }) => Err(DomainError::AccountAlreadyExists),
        (AccountState::NotCreated, AccountCommand::Deposit { .. } | AccountCommand::Withdraw { .. }) => {
            Err(DomainError::AccountNotFound)
        }
        (AccountState::Open { balance, .. }, AccountCommand::Deposit { amount }) => {
            balance.checked_add(*amount).ok_or(DomainError::BalanceLimitExceeded)?;
            Ok(vec![AccountEvent::MoneyDeposited { amount: *amount }])
        }
        (AccountState::Open { balance, .. }, AccountCommand::Withdraw { amount }) => {
            balance
                .checked_sub(*amount)
                .ok_or(DomainError::InsufficientFunds { balance: *balance, requested: *amount })?;
            Ok(vec![AccountEvent::MoneyWithdrawn { amount: *amount }])
        }
    }
}

/// [`decide`] for a command someone sent: only the account's owner may move its money.
pub fn decide_for(state: &AccountState, sent: &CommandBy) -> Result<Vec<AccountEvent>, DomainError> {
    match (state, &sent.command) {
        (AccountState::Open { owner_id, .. }, AccountCommand::Deposit { .. } | AccountCommand::Withdraw { .. })
            if *owner_id != sent.by =>
        {
            Err(DomainError::AccountNotFound)
        }
        _ => decide(state, &sent.command),
    }
}

/// Folds one event into the state. Events are facts that already passed `decide`, so an event
/// that does not fit the state (a deposit to an account never created, a withdrawal beyond the
/// balance) means the store is corrupt; it is ignored here, whole — the balance and the totals
/// stay in step — and caught by the event store's own guarantees, not by panicking in the
/// middle of a fold.
pub fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
    match (state, event) {
        (state @ AccountState::Open { balance, .. }, AccountEvent::MoneyDeposited { amount })
            if balance.checked_add(*amount).is_none() =>
        {
            state
        }
        (state @ AccountState::Open { balance, .. }, AccountEvent::MoneyWithdrawn { amount })
            if balance.checked_sub(*amount).is_none() =>
        {
            state
        }
        (AccountState::NotCreated, AccountEvent::AccountCreated { owner_id, initial_balance }) => AccountState::Open {
            owner_id: owner_id.clone(),
            balance: Balance::from(*initial_balance),
            total_deposits: initial_balance.value(),
            total_withdrawals: Decimal::ZERO,
        },
        (
            AccountState::Open { owner_id, balance, total_deposits, total_withdrawals },
            AccountEvent::MoneyDeposited { amount },
        ) => AccountState::Open {
            owner_id,
            balance: balance.checked_add(*amount).unwrap_or(balance),
            total_deposits: total_deposits + amount.value(),
            total_withdrawals,
        },
        (
            AccountState::Open { owner_id, balance, total_deposits, total_withdrawals },
            AccountEvent::MoneyWithdrawn { amount },
        ) => AccountState::Open {
            owner_id,
            balance: balance.checked_sub(*amount).unwrap_or(balance),
            total_deposits,
            total_withdrawals: total_withdrawals + amount.value(),
        },
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    //! Given these events, when this command, then these events or this refusal.

    use super::*;

    fn owner() -> OwnerId {
        OwnerId::parse("alice").unwrap()
    }

    fn money(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    fn amount(s: &str) -> Amount {
        Amount::parse(s).unwrap()
    }

    fn created_with(initial: &str) -> AccountEvent {
        AccountEvent::AccountCreated { owner_id: owner(), initial_balance: money(initial) }
    }

    fn given(events: &[AccountEvent]) -> AccountState {
        events.iter().fold(AccountState::default(), evolve)
    }

    #[test]
    fn creating_a_new_account_records_the_owner_and_initial_balance() {
        let command = AccountCommand::CreateAccount { owner_id: owner(), initial_balance: money("100") };
        assert_eq!(decide(&given(&[]), &command), Ok(vec![created_with("100")]));
    }

    #[test]
    fn an_account_may_start_empty() {
        let command = AccountCommand::CreateAccount { owner_id: owner(), initial_balance: Money::ZERO };
        assert_eq!(decide(&given(&[]), &command), Ok(vec![created_with("0")]));
    }

    #[test]
    fn an_account_cannot_be_created_twice() {
        let command = AccountCommand::CreateAccount { owner_id: owner(), initial_balance: money("5") };
        assert_eq!(decide(&given(&[created_with("100")]), &command), Err(DomainError::AccountAlreadyExists));
    }

    #[test]
    fn depositing_records_the_amount() {
        let command = AccountCommand::Deposit { amount: amount("25.50") };
        assert_eq!(
            decide(&given(&[created_with("100")]), &command),
            Ok(vec![AccountEvent::MoneyDeposited { amount: amount("25.50") }])
        );
    }

    #[test]
    fn money_cannot_move_on_an_account_that_does_not_exist() {
        let deposit = AccountCommand::Deposit { amount: amount("1") };
        let withdraw = AccountCommand::Withdraw { amount: amount("1") };
        assert_eq!(decide(&given(&[]), &deposit), Err(DomainError::AccountNotFound));
        assert_eq!(decide(&given(&[]), &withdraw), Err(DomainError::AccountNotFound));
    }

    #[test]
    fn withdrawing_up_to_the_balance_is_allowed() {
        let history = [created_with("100"), AccountEvent::MoneyDeposited { amount: amount("50") }];
        let command = AccountCommand::Withdraw { amount: amount("150") };
        assert_eq!(
            decide(&given(&history), &command),
            Ok(vec![AccountEvent::MoneyWithdrawn { amount: amount("150") }])
        );
    }

    #[test]
    fn only_the_owner_moves_the_money_and_to_anyone_else_the_account_does_not_exist() {
        let state = given(&[created_with("100")]);
        let stranger = OwnerId::parse("mallory").unwrap();
        for command in
            [AccountCommand::Deposit { amount: amount("1") }, AccountCommand::Withdraw { amount: amount("1") }]
        {
            let by_owner = CommandBy { by: owner(), command: command.clone() };
            assert_eq!(decide_for(&state, &by_owner), decide(&state, &command));
            let by_stranger = CommandBy { by: stranger.clone(), command };
            assert_eq!(decide_for(&state, &by_stranger), Err(DomainError::AccountNotFound));
        }
        let unknown = CommandBy { by: stranger, command: AccountCommand::Deposit { amount: amount("1") } };
        assert_eq!(decide_for(&AccountState::NotCreated, &unknown), Err(DomainError::AccountNotFound));
    }

    #[test]
    fn withdrawing_more_than_the_balance_is_refused_with_both_figures() {
        let history = [created_with("100"), AccountEvent::MoneyWithdrawn { amount: amount("60") }];
        let command = AccountCommand::Withdraw { amount: amount("50") };
        let refusal = decide(&given(&history), &command).unwrap_err();
        assert_eq!(
            refusal,
            DomainError::InsufficientFunds { balance: Balance::from(money("40")), requested: amount("50") }
        );
        assert_eq!(refusal.to_string(), "insufficient funds: balance 40.00, withdrawal 50.00");
    }

    #[test]
    fn a_deposit_may_not_overflow_the_balance() {
        let mut history = vec![created_with("1000000000")];
        // The balance column holds < 10^18; 10^9 deposits of 10^9 would reach it. Build the
        // state directly rather than folding a billion events.
        let nearly_full = AccountState::Open {
            owner_id: owner(),
            balance: serde_json::from_str("\"999999999999999999.00\"").unwrap(),
            total_deposits: Decimal::ZERO,
            total_withdrawals: Decimal::ZERO,
        };
        let command = AccountCommand::Deposit { amount: amount("1") };
        assert_eq!(decide(&nearly_full, &command), Err(DomainError::BalanceLimitExceeded));
        history.push(AccountEvent::MoneyDeposited { amount: amount("1") });
        assert!(decide(&given(&history), &command).is_ok());
    }

    #[test]
    fn evolve_folds_the_balance_and_the_totals() {
        let state = given(&[
            created_with("100"),
            AccountEvent::MoneyDeposited { amount: amount("20.25") },
            AccountEvent::MoneyWithdrawn { amount: amount("0.25") },
        ]);
        assert_eq!(
            state,
            AccountState::Open {
                owner_id: owner(),
                balance: Balance::from(money("120")),
                total_deposits: money("120.25").value(),
                total_withdrawals: money("0.25").value(),
            }
        );
    }

    #[test]
    fn owner_ids_are_trimmed_and_bounded() {
        assert_eq!(OwnerId::parse("  bob ").unwrap().as_str(), "bob");
        assert_eq!(OwnerId::parse("   "), Err(OwnerIdError::Empty));
        assert_eq!(OwnerId::parse(&"x".repeat(101)), Err(OwnerIdError::TooLong));
        assert_eq!(OwnerId::parse("a\u{0}b"), Err(OwnerIdError::ControlCharacter));
    }

    #[test]
    fn an_event_that_does_not_fit_the_balance_is_ignored_whole() {
        let opened = evolve(
            AccountState::NotCreated,
            &AccountEvent::AccountCreated { owner_id: owner(), initial_balance: money("0") },
        );
        let corrupt = AccountEvent::MoneyWithdrawn { amount: Amount::parse("5").unwrap() };
        assert_eq!(evolve(opened.clone(), &corrupt), opened, "balance and totals stay in step");
    }
}
