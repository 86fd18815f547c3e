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
    assert_eq!(decide(&given(&history), &command), Ok(vec![AccountEvent::MoneyWithdrawn { amount: amount("150") }]));
}

#[test]
fn only_the_owner_moves_the_money_and_to_anyone_else_the_account_does_not_exist() {
    let state = given(&[created_with("100")]);
    let stranger = OwnerId::parse("mallory").unwrap();
    for command in [AccountCommand::Deposit { amount: amount("1") }, AccountCommand::Withdraw { amount: amount("1") }] {
        let by_owner = CommandBy { by: Sender::Customer(owner()), command: command.clone() };
        assert_eq!(decide_for(&state, &by_owner), decide(&state, &command));
        let by_stranger = CommandBy { by: Sender::Customer(stranger.clone()), command };
        assert_eq!(decide_for(&state, &by_stranger), Err(DomainError::AccountNotFound));
    }
    let unknown =
        CommandBy { by: Sender::Customer(stranger), command: AccountCommand::Deposit { amount: amount("1") } };
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
        status: AccountStatus::Active,
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
            status: AccountStatus::Active,
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

fn reason(text: &str) -> Reason {
    Reason::parse(text).unwrap()
}

fn at(seconds: i64) -> OffsetDateTime {
    time::macros::datetime!(2026-12-03 12:00 UTC) + time::Duration::seconds(seconds)
}

fn debit(amount_text: &str, run_at: i64) -> AccountCommand {
    AccountCommand::DebitForTransfer {
        transfer_id: Uuid::from_u128(7),
        to: Uuid::from_u128(8),
        amount: amount(amount_text),
        at: at(run_at),
        deadline: at(30),
    }
}

fn credit(amount_text: &str, run_at: i64) -> AccountCommand {
    AccountCommand::CreditForTransfer {
        transfer_id: Uuid::from_u128(7),
        from: Uuid::from_u128(6),
        amount: amount(amount_text),
        at: at(run_at),
        deadline: at(30),
    }
}

fn refund(amount_text: &str) -> AccountCommand {
    AccountCommand::RefundTransfer { transfer_id: Uuid::from_u128(7), amount: amount(amount_text) }
}

fn frozen() -> AccountEvent {
    AccountEvent::AccountFrozen { reason: reason("fraud check") }
}

#[test]
fn a_transfer_debit_is_a_withdrawal_that_says_where_the_money_went() {
    let state = given(&[created_with("100")]);
    let events = decide(&state, &debit("40", 0)).unwrap();
    assert_eq!(
        events,
        vec![AccountEvent::TransferDebited {
            transfer_id: Uuid::from_u128(7),
            to: Uuid::from_u128(8),
            amount: amount("40")
        }]
    );
    let after = events.iter().fold(state, evolve);
    assert_eq!(after.balance(), Some(Balance::from(money("60"))));
    assert!(matches!(decide(&after, &debit("61", 0)), Err(DomainError::InsufficientFunds { .. })));
}

#[test]
fn a_step_after_the_transfers_deadline_is_refused() {
    let state = given(&[created_with("100")]);
    assert_eq!(decide(&state, &debit("1", 31)), Err(DomainError::TransferExpired));
    assert_eq!(decide(&state, &credit("1", 31)), Err(DomainError::TransferExpired));
    assert!(decide(&state, &credit("1", 30)).is_ok(), "at the deadline is still in time");
}

#[test]
fn a_frozen_account_moves_no_money_but_takes_refunds_until_unfrozen() {
    let state = given(&[created_with("100"), frozen()]);
    let refusal = Err(DomainError::AccountFrozen { reason: reason("fraud check") });
    for command in [
        AccountCommand::Deposit { amount: amount("1") },
        AccountCommand::Withdraw { amount: amount("1") },
        debit("1", 0),
        credit("1", 0),
        AccountCommand::Close,
        AccountCommand::Freeze { reason: reason("again") },
    ] {
        assert_eq!(decide(&state, &command), refusal, "{command:?}");
    }
    assert!(decide(&state, &refund("5")).is_ok());
    let unfrozen = given(&[created_with("100"), frozen(), AccountEvent::AccountUnfrozen]);
    assert!(decide(&unfrozen, &credit("1", 0)).is_ok());
    assert_eq!(decide(&unfrozen, &AccountCommand::Unfreeze), Err(DomainError::NotFrozen));
}

#[test]
fn an_account_closes_at_zero_only_and_then_takes_nothing_but_refunds() {
    let state = given(&[created_with("10")]);
    assert_eq!(
        decide(&state, &AccountCommand::Close),
        Err(DomainError::BalanceNotZero { balance: Balance::from(money("10")) })
    );
    let emptied = given(&[created_with("10"), AccountEvent::MoneyWithdrawn { amount: amount("10") }]);
    assert_eq!(decide(&emptied, &AccountCommand::Close), Ok(vec![AccountEvent::AccountClosed]));
    let closed = given(&[created_with("0"), AccountEvent::AccountClosed]);
    for command in [AccountCommand::Deposit { amount: amount("1") }, credit("1", 0), AccountCommand::Close] {
        assert_eq!(decide(&closed, &command), Err(DomainError::AccountClosed), "{command:?}");
    }
    // A transfer sent before closing may come back: the money is taken and the account is
    // open again, so that its owner can withdraw it.
    let refunded = decide(&closed, &refund("3")).unwrap().iter().fold(closed, evolve);
    assert!(matches!(
        refunded,
        AccountState::Open { status: AccountStatus::Active, balance, .. } if balance == Balance::from(money("3"))
    ));
}

#[test]
fn each_sender_sends_its_own_commands_only() {
    let state = given(&[created_with("100")]);
    let customer = Sender::Customer(owner());
    let operator = Sender::Operator(OwnerId::parse("olga").unwrap());
    let send = |by: &Sender, command: AccountCommand| decide_for(&state, &CommandBy { by: by.clone(), command });
    let not_found = Err(DomainError::AccountNotFound);
    // Customers cannot credit themselves, refund themselves or freeze anything.
    assert_eq!(send(&customer, credit("1", 0)), not_found);
    assert_eq!(send(&customer, refund("1")), not_found);
    assert_eq!(send(&customer, AccountCommand::Freeze { reason: reason("x") }), not_found);
    // Operators freeze; they move no money of others.
    assert!(send(&operator, AccountCommand::Freeze { reason: reason("x") }).is_ok());
    assert_eq!(send(&operator, AccountCommand::Withdraw { amount: amount("1") }), not_found);
    assert_eq!(send(&operator, debit("1", 0)), not_found);
    // The transfer process credits and refunds, and debits nothing itself.
    assert!(send(&Sender::TransferProcess, credit("1", 0)).is_ok());
    assert!(send(&Sender::TransferProcess, refund("1")).is_ok());
    assert_eq!(send(&Sender::TransferProcess, debit("1", 0)), not_found);
    // A transfer's debit goes as the customer who asked: only the owner's goes through.
    assert!(send(&customer, debit("1", 0)).is_ok());
    assert_eq!(send(&Sender::Customer(OwnerId::parse("mallory").unwrap()), debit("1", 0)), not_found);
}

#[test]
fn reasons_are_trimmed_and_bounded() {
    assert_eq!(reason("  audit ").as_str(), "audit");
    assert_eq!(Reason::parse(" "), Err(ReasonError::Empty));
    assert_eq!(Reason::parse(&"x".repeat(201)), Err(ReasonError::TooLong));
}
