//! Properties of the money rules and the account decider, checked on generated inputs: what the
//! unit tests show by example, here for any sum, any history and any snapshot point.
//!
//! Sums are generated as whole cents (`Decimal::new(cents, 2)`) and go through the domain's own
//! constructors, so a strategy cannot make a sum the domain would not. Failures are not persisted
//! to files: a failing case is printed, shrunk, with its inputs.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use rust_decimal::{Decimal, dec};

use super::account::{AccountCommand, AccountEvent, AccountState, DomainError, OwnerId, decide, evolve};
use super::money::{Amount, Balance, Money, MoneyError};

/// [`Money::MAX`] in cents.
pub(crate) const MAX_CENTS: i64 = 100_000_000_000;

/// 256 cases, nothing written to disk.
pub(crate) fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

fn cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// Any valid sum, with zero, small sums and the limit drawn more often than chance would.
pub(crate) fn money() -> impl Strategy<Value = Money> {
    prop_oneof![Just(0), Just(MAX_CENTS), 0..=10_000_i64, 0..=MAX_CENTS]
        .prop_map(|c| Money::try_from(cents(c)).expect("every cent count up to the limit is money"))
}

/// Any amount a command may move: small ones, which an account usually covers, and large ones,
/// which it often does not.
fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![1..=10_000_i64, 1..=MAX_CENTS]
        .prop_map(|c| Amount::try_from(cents(c)).expect("every positive cent count up to the limit is an amount"))
}

/// Any name `OwnerId::parse` accepts, unicode and inner spaces included. Printable characters
/// only (`\PC`), so that few draws are thrown away; only blank ones are.
fn owner() -> impl Strategy<Value = OwnerId> {
    "\\PC{1,40}".prop_filter_map("not a valid owner", |name| OwnerId::parse(&name).ok())
}

/// A decimal, unsigned, whose last non-zero digit is at the third decimal place or beyond: plain
/// (with trailing zeros, and more places than a `Decimal` holds) or in scientific notation.
pub(crate) fn over_precise() -> impl Strategy<Value = String> {
    let plain = (any::<u64>(), "[0-9]{2,38}", 1..=9_u8, 0..4_usize)
        .prop_map(|(whole, places, last, zeros)| format!("{whole}.{places}{last}{}", "0".repeat(zeros)));
    // The significand as a number, so that it has no leading zero (`01e-3` is no JSON number).
    let scientific = (any::<u64>(), 1..=9_u8, 3..=40_u32)
        .prop_map(|(digits, last, exponent)| format!("{}e-{exponent}", u128::from(digits) * 10 + u128::from(last)));
    prop_oneof![plain, scientific]
}

fn command() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        4 => amount().prop_map(|amount| AccountCommand::Deposit { amount }),
        4 => amount().prop_map(|amount| AccountCommand::Withdraw { amount }),
        1 => (owner(), money())
            .prop_map(|(owner_id, initial_balance)| AccountCommand::CreateAccount { owner_id, initial_balance }),
    ]
}

/// Any event, whether or not it fits the state it lands on: a fold must take every stream.
fn event() -> impl Strategy<Value = AccountEvent> {
    prop_oneof![
        4 => amount().prop_map(|amount| AccountEvent::MoneyDeposited { amount }),
        4 => amount().prop_map(|amount| AccountEvent::MoneyWithdrawn { amount }),
        1 => (owner(), money())
            .prop_map(|(owner_id, initial_balance)| AccountEvent::AccountCreated { owner_id, initial_balance }),
    ]
}

/// A stream that usually starts with the account's creation, and sometimes does not.
fn stream() -> impl Strategy<Value = Vec<AccountEvent>> {
    let created = (owner(), money())
        .prop_map(|(owner_id, initial_balance)| AccountEvent::AccountCreated { owner_id, initial_balance });
    (prop::option::weighted(0.9, created), prop::collection::vec(event(), 0..40))
        .prop_map(|(first, rest)| first.into_iter().chain(rest).collect())
}

fn fold(events: &[AccountEvent]) -> AccountState {
    events.iter().fold(AccountState::default(), evolve)
}

/// The figures of an open account: owner, balance, total deposits, total withdrawals.
fn open(state: &AccountState) -> Result<(&OwnerId, Balance, Decimal, Decimal), TestCaseError> {
    match state {
        AccountState::Open { owner_id, balance, total_deposits, total_withdrawals, .. } => {
            Ok((owner_id, *balance, *total_deposits, *total_withdrawals))
        }
        AccountState::NotCreated => Err(TestCaseError::fail("the account should be open")),
    }
}

#[test]
fn max_cents_is_the_money_limit() {
    assert_eq!(cents(MAX_CENTS), Money::MAX);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn money_prints_with_two_places_and_parses_back(money in money()) {
        let printed = money.to_string();
        prop_assert_eq!(printed.split_once('.').map(|(_, places)| places.len()), Some(2), "{}", printed);
        prop_assert_eq!(Money::parse(&printed), Ok(money));
        if money != Money::ZERO {
            prop_assert_eq!(Amount::parse(&printed).map(Money::from), Ok(money));
        }
    }

    #[test]
    fn every_spelling_of_a_sum_parses_to_the_same_money(c in 0..=MAX_CENTS, zeros in 0..4_usize) {
        let money = Money::try_from(cents(c)).unwrap();
        let trailing = "0".repeat(zeros);
        for spelling in [
            cents(c).normalize().to_string(),
            format!("{c}e-2"),
            format!("{}E{zeros}", cents(c) / Decimal::from(10_i64.pow(zeros as u32))),
            format!(" +00{money}{trailing} "),
        ] {
            prop_assert_eq!(Money::parse(&spelling), Ok(money), "{:?}", spelling);
        }
    }

    #[test]
    fn more_than_two_decimal_places_are_refused_never_rounded(text in over_precise()) {
        prop_assert_eq!(Money::parse(&text), Err(MoneyError::TooPrecise), "{}", text);
        prop_assert_eq!(Amount::parse(&text), Err(MoneyError::TooPrecise), "{}", text);
    }

    #[test]
    fn negative_sums_are_refused(c in 1..=i64::MAX) {
        let text = format!("-{}", cents(c));
        prop_assert_eq!(Money::parse(&text), Err(MoneyError::Negative), "{}", text);
        prop_assert_eq!(Amount::parse(&text), Err(MoneyError::NotPositive), "{}", text);
    }

    #[test]
    fn sums_above_the_limit_are_refused(c in MAX_CENTS + 1..=i64::MAX, digit in 1..=9_u8, exponent in 10..=27_u32) {
        for text in [cents(c).to_string(), format!("{digit}e{exponent}")] {
            prop_assert_eq!(Money::parse(&text), Err(MoneyError::TooLarge), "{}", text);
            prop_assert_eq!(Amount::parse(&text), Err(MoneyError::TooLarge), "{}", text);
        }
    }

    /// Any commands after a creation: the accepted ones keep the account's figures exact and its
    /// balance covered, and each refusal is the one the rules give.
    #[test]
    fn the_balance_is_what_the_accepted_commands_add_up_to(
        owner_id in owner(),
        initial in money(),
        commands in prop::collection::vec(command(), 0..40),
    ) {
        let create = AccountCommand::CreateAccount { owner_id: owner_id.clone(), initial_balance: initial };
        let mut state = AccountState::default();
        for event in decide(&state, &create).unwrap() {
            state = evolve(state, &event);
        }
        let (mut deposited, mut withdrawn) = (initial.value(), Decimal::ZERO);

        for command in &commands {
            let (_, balance, _, _) = open(&state)?;
            let decision = decide(&state, command);
            match (command, &decision) {
                (AccountCommand::CreateAccount { .. }, _) => {
                    prop_assert_eq!(&decision, &Err(DomainError::AccountAlreadyExists));
                }
                (AccountCommand::Deposit { amount }, _) => {
                    // Forty deposits of at most 10^9 stay far below the balance's limit.
                    prop_assert_eq!(&decision, &Ok(vec![AccountEvent::MoneyDeposited { amount: *amount }]));
                    deposited += amount.value();
                }
                (AccountCommand::Withdraw { amount }, Ok(_)) => {
                    prop_assert!(amount.value() <= balance.value(), "{} withdrawn from {}", amount, balance);
                    prop_assert_eq!(&decision, &Ok(vec![AccountEvent::MoneyWithdrawn { amount: *amount }]));
                    withdrawn += amount.value();
                }
                (AccountCommand::Withdraw { amount }, Err(refusal)) => {
                    prop_assert!(amount.value() > balance.value(), "{} refused from {}", amount, balance);
                    prop_assert_eq!(refusal, &DomainError::InsufficientFunds { balance, requested: *amount });
                }
                (other, _) => return Err(TestCaseError::fail(format!("the generator makes no {other:?}"))),
            }
            for event in decision.into_iter().flatten() {
                state = evolve(state, &event);
            }

            let (owner, balance, total_deposits, total_withdrawals) = open(&state)?;
            prop_assert_eq!(owner, &owner_id);
            prop_assert!(balance.value() >= Decimal::ZERO);
            prop_assert_eq!(balance.value(), deposited - withdrawn);
            prop_assert_eq!(total_deposits, deposited);
            prop_assert_eq!(total_withdrawals, withdrawn);

            // Whatever the balance, a cent more than it is refused and all of it is not.
            if let Ok(over) = Amount::try_from(balance.value() + dec!(0.01)) {
                prop_assert_eq!(
                    decide(&state, &AccountCommand::Withdraw { amount: over }),
                    Err(DomainError::InsufficientFunds { balance, requested: over })
                );
            }
            if let Ok(all) = Amount::try_from(balance.value()) {
                prop_assert_eq!(
                    decide(&state, &AccountCommand::Withdraw { amount: all }),
                    Ok(vec![AccountEvent::MoneyWithdrawn { amount: all }])
                );
            }
        }
    }

    #[test]
    fn a_withdrawal_larger_than_the_balance_is_refused(
        (initial, excess) in (0..MAX_CENTS).prop_flat_map(|initial| (Just(initial), 1..=MAX_CENTS - initial)),
        owner_id in owner(),
    ) {
        let initial_balance = Money::try_from(cents(initial)).unwrap();
        let state = fold(&[AccountEvent::AccountCreated { owner_id, initial_balance }]);
        let requested = Amount::try_from(cents(initial + excess)).unwrap();
        prop_assert_eq!(
            decide(&state, &AccountCommand::Withdraw { amount: requested }),
            Err(DomainError::InsufficientFunds { balance: Balance::from(initial_balance), requested })
        );
    }

    /// Before its creation an account is not there, whatever came before (a stream that does not
    /// start with the creation is corrupt, and its events are ignored).
    #[test]
    fn money_cannot_move_on_an_account_not_yet_created(
        before in prop::collection::vec(event(), 0..10),
        amount in amount(),
    ) {
        let before: Vec<_> =
            before.into_iter().take_while(|event| !matches!(event, AccountEvent::AccountCreated { .. })).collect();
        let state = fold(&before);
        prop_assert_eq!(&state, &AccountState::NotCreated);
        prop_assert_eq!(decide(&state, &AccountCommand::Deposit { amount }), Err(DomainError::AccountNotFound));
        prop_assert_eq!(decide(&state, &AccountCommand::Withdraw { amount }), Err(DomainError::AccountNotFound));
    }

    /// Loading from a snapshot taken after any event, stored as JSON, gives the state a fold from
    /// the start gives.
    #[test]
    fn folding_from_a_snapshot_equals_folding_from_the_start(events in stream(), split in any::<Index>()) {
        let k = split.index(events.len() + 1);
        let whole = fold(&events);
        let at_k = fold(&events[..k]);
        prop_assert_eq!(&events[k..].iter().fold(at_k.clone(), evolve), &whole);

        // As `account_store` writes and reads snapshots, and as text (a JSONB column's round trip).
        let stored = serde_json::to_value(&at_k).unwrap();
        let snapshot: AccountState = serde_json::from_value(stored).unwrap();
        prop_assert_eq!(&snapshot, &at_k);
        let text = serde_json::to_string(&at_k).unwrap();
        prop_assert_eq!(&serde_json::from_str::<AccountState>(&text).unwrap(), &at_k);
        prop_assert_eq!(&events[k..].iter().fold(snapshot, evolve), &whole);
    }
}
