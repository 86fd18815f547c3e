//! Given these events, when this command, then these events or this refusal.

use super::*;
use crate::domain::given_when_then::{self, Decider, Decides, Given};

/// The account to the harness: [`decide`] for a bare command, [`decide_for`] for one with its
/// sender, both over the history [`evolve`] folds.
struct Account;

impl Decider for Account {
    type State = AccountState;
    type Event = AccountEvent;
    type Error = DomainError;

    fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
        super::evolve(state, event)
    }
}

impl Decides<AccountCommand> for Account {
    fn decide(state: &AccountState, command: &AccountCommand) -> Result<Vec<AccountEvent>, DomainError> {
        super::decide(state, command)
    }
}

impl Decides<CommandBy> for Account {
    fn decide(state: &AccountState, sent: &CommandBy) -> Result<Vec<AccountEvent>, DomainError> {
        decide_for(state, sent)
    }
}

fn given(history: impl IntoIterator<Item = AccountEvent>) -> Given<Account> {
    given_when_then::given(history)
}

/// The state `events` fold into, for the tests of `evolve` itself.
fn fold(events: &[AccountEvent]) -> AccountState {
    events.iter().fold(AccountState::default(), evolve)
}

fn owner() -> OwnerId {
    OwnerId::parse("alice").unwrap()
}

fn money(s: &str) -> Money {
    Money::parse(s).unwrap()
}

fn amount(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

fn reason(text: &str) -> Reason {
    Reason::parse(text).unwrap()
}

fn at(seconds: i64) -> OffsetDateTime {
    time::macros::datetime!(2026-12-03 12:00 UTC) + time::Duration::seconds(seconds)
}

// Commands. A transfer's steps are transfer 7's, from account 6 to account 8, due at `at(30)`.

fn create(initial: &str) -> AccountCommand {
    AccountCommand::CreateAccount { owner_id: owner(), initial_balance: money(initial) }
}

fn deposit(amount_text: &str) -> AccountCommand {
    AccountCommand::Deposit { amount: amount(amount_text) }
}

fn withdraw(amount_text: &str) -> AccountCommand {
    AccountCommand::Withdraw { amount: amount(amount_text) }
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

fn freeze(text: &str) -> AccountCommand {
    AccountCommand::Freeze { reason: reason(text) }
}

// Senders.

fn by(sender: Sender, command: AccountCommand) -> CommandBy {
    CommandBy { by: sender, command }
}

/// The account's owner.
fn customer() -> Sender {
    Sender::Customer(owner())
}

/// A customer who does not own the account.
fn stranger() -> Sender {
    Sender::Customer(OwnerId::parse("mallory").unwrap())
}

fn operator() -> Sender {
    Sender::Operator(OwnerId::parse("olga").unwrap())
}

// Events, matching the commands above.

fn created_with(initial: &str) -> AccountEvent {
    AccountEvent::AccountCreated { owner_id: owner(), initial_balance: money(initial) }
}

fn deposited(amount_text: &str) -> AccountEvent {
    AccountEvent::MoneyDeposited { amount: amount(amount_text) }
}

fn withdrawn(amount_text: &str) -> AccountEvent {
    AccountEvent::MoneyWithdrawn { amount: amount(amount_text) }
}

fn debited(amount_text: &str) -> AccountEvent {
    AccountEvent::TransferDebited {
        transfer_id: Uuid::from_u128(7),
        to: Uuid::from_u128(8),
        amount: amount(amount_text),
    }
}

fn credited(amount_text: &str) -> AccountEvent {
    AccountEvent::TransferCredited {
        transfer_id: Uuid::from_u128(7),
        from: Uuid::from_u128(6),
        amount: amount(amount_text),
    }
}

fn refunded(amount_text: &str) -> AccountEvent {
    AccountEvent::TransferRefunded { transfer_id: Uuid::from_u128(7), amount: amount(amount_text) }
}

fn frozen() -> AccountEvent {
    AccountEvent::AccountFrozen { reason: reason("fraud check") }
}

#[test]
fn creating_a_new_account_records_the_owner_and_initial_balance() {
    given([]).when(create("100")).then([created_with("100")]);
}

#[test]
fn an_account_may_start_empty() {
    given([])
        .when(AccountCommand::CreateAccount { owner_id: owner(), initial_balance: Money::ZERO })
        .then([created_with("0")]);
}

#[test]
fn an_account_cannot_be_created_twice() {
    given([created_with("100")]).when(create("5")).then_refused(DomainError::AccountAlreadyExists);
}

#[test]
fn depositing_records_the_amount() {
    given([created_with("100")]).when(deposit("25.50")).then([deposited("25.50")]);
}

#[test]
fn money_cannot_move_on_an_account_that_does_not_exist() {
    given([]).when(deposit("1")).then_refused(DomainError::AccountNotFound);
    given([]).when(withdraw("1")).then_refused(DomainError::AccountNotFound);
}

#[test]
fn withdrawing_up_to_the_balance_is_allowed() {
    given([created_with("100"), deposited("50")]).when(withdraw("150")).then([withdrawn("150")]);
}

#[test]
fn only_the_owner_moves_the_money_and_to_anyone_else_the_account_does_not_exist() {
    given([created_with("100")]).when(by(customer(), deposit("1"))).then([deposited("1")]);
    given([created_with("100")]).when(by(customer(), withdraw("1"))).then([withdrawn("1")]);
    given([created_with("100")]).when(by(stranger(), deposit("1"))).then_refused(DomainError::AccountNotFound);
    given([created_with("100")]).when(by(stranger(), withdraw("1"))).then_refused(DomainError::AccountNotFound);
    given([]).when(by(stranger(), deposit("1"))).then_refused(DomainError::AccountNotFound);
}

#[test]
fn withdrawing_more_than_the_balance_is_refused_with_both_figures() {
    let refusal = DomainError::InsufficientFunds { balance: Balance::from(money("40")), requested: amount("50") };
    assert_eq!(refusal.to_string(), "insufficient funds: balance 40.00, withdrawal 50.00");
    given([created_with("100"), withdrawn("60")]).when(withdraw("50")).then_refused(refusal);
}

#[test]
fn a_deposit_may_not_overflow_the_balance() {
    // The balance column holds < 10^18; 10^9 deposits of 10^9 would reach it. Build the
    // state directly rather than folding a billion events: no history the harness could be
    // given gets there.
    let nearly_full = AccountState::Open {
        owner_id: owner(),
        balance: serde_json::from_str("\"999999999999999999.00\"").unwrap(),
        total_deposits: Decimal::ZERO,
        total_withdrawals: Decimal::ZERO,
        status: AccountStatus::Active,
    };
    assert_eq!(decide(&nearly_full, &deposit("1")), Err(DomainError::BalanceLimitExceeded));
    given([created_with("1000000000"), deposited("1")]).when(deposit("1")).then([deposited("1")]);
}

#[test]
fn evolve_folds_the_balance_and_the_totals() {
    let state = fold(&[created_with("100"), deposited("20.25"), withdrawn("0.25")]);
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
    // The bound counts characters, not bytes, and only those left after trimming.
    assert_eq!(OwnerId::parse(&"é".repeat(100)).map(|owner| owner.as_str().chars().count()), Ok(100));
    assert!(OwnerId::parse(&format!(" {} ", "x".repeat(100))).is_ok());
}

#[test]
fn an_event_that_does_not_fit_the_balance_is_ignored_whole() {
    let opened = evolve(AccountState::NotCreated, &created_with("0"));
    let corrupt = withdrawn("5");
    assert_eq!(evolve(opened.clone(), &corrupt), opened, "balance and totals stay in step");
}

#[test]
fn a_transfer_debit_is_a_withdrawal_that_says_where_the_money_went() {
    let after = given([created_with("100")]).when(debit("40", 0)).then([debited("40")]);
    assert_eq!(after.balance(), Some(Balance::from(money("60"))));
    given([created_with("100"), debited("40")])
        .when(debit("61", 0))
        .then_refused(DomainError::InsufficientFunds { balance: Balance::from(money("60")), requested: amount("61") });
}

#[test]
fn a_step_after_the_transfers_deadline_is_refused() {
    given([created_with("100")]).when(debit("1", 31)).then_refused(DomainError::TransferExpired);
    given([created_with("100")]).when(credit("1", 31)).then_refused(DomainError::TransferExpired);
    // At the deadline is still in time.
    given([created_with("100")]).when(credit("1", 30)).then([credited("1")]);
}

#[test]
fn a_frozen_account_moves_no_money_but_takes_refunds_until_unfrozen() {
    let refusal = DomainError::AccountFrozen { reason: reason("fraud check") };
    for command in [deposit("1"), withdraw("1"), debit("1", 0), credit("1", 0), AccountCommand::Close, freeze("again")]
    {
        given([created_with("100"), frozen()]).when(command).then_refused(refusal.clone());
    }
    given([created_with("100"), frozen()]).when(refund("5")).then([refunded("5")]);
    given([created_with("100"), frozen()]).when(AccountCommand::Unfreeze).then([AccountEvent::AccountUnfrozen]);
    given([created_with("100"), frozen(), AccountEvent::AccountUnfrozen]).when(credit("1", 0)).then([credited("1")]);
    given([created_with("100"), frozen(), AccountEvent::AccountUnfrozen])
        .when(AccountCommand::Unfreeze)
        .then_refused(DomainError::NotFrozen);
}

#[test]
fn an_account_closes_at_zero_only_and_then_takes_nothing_but_refunds() {
    given([created_with("10")])
        .when(AccountCommand::Close)
        .then_refused(DomainError::BalanceNotZero { balance: Balance::from(money("10")) });
    given([created_with("10"), withdrawn("10")]).when(AccountCommand::Close).then([AccountEvent::AccountClosed]);
    for command in [deposit("1"), credit("1", 0), AccountCommand::Close] {
        given([created_with("0"), AccountEvent::AccountClosed]).when(command).then_refused(DomainError::AccountClosed);
    }
    // A transfer sent before closing may come back: the money is taken and the account is
    // open again, so that its owner can withdraw it.
    let reopened = given([created_with("0"), AccountEvent::AccountClosed]).when(refund("3")).then([refunded("3")]);
    assert!(matches!(
        reopened,
        AccountState::Open { status: AccountStatus::Active, balance, .. } if balance == Balance::from(money("3"))
    ));
}

#[test]
fn each_sender_sends_its_own_commands_only() {
    let not_found = DomainError::AccountNotFound;
    // Customers cannot credit themselves, refund themselves or freeze anything.
    given([created_with("100")]).when(by(customer(), credit("1", 0))).then_refused(not_found.clone());
    given([created_with("100")]).when(by(customer(), refund("1"))).then_refused(not_found.clone());
    given([created_with("100")]).when(by(customer(), freeze("x"))).then_refused(not_found.clone());
    // Operators freeze; they move no money of others.
    given([created_with("100")])
        .when(by(operator(), freeze("x")))
        .then([AccountEvent::AccountFrozen { reason: reason("x") }]);
    given([created_with("100")]).when(by(operator(), withdraw("1"))).then_refused(not_found.clone());
    given([created_with("100")]).when(by(operator(), debit("1", 0))).then_refused(not_found.clone());
    // The transfer process credits and refunds, and debits nothing itself.
    given([created_with("100")]).when(by(Sender::TransferProcess, credit("1", 0))).then([credited("1")]);
    given([created_with("100")]).when(by(Sender::TransferProcess, refund("1"))).then([refunded("1")]);
    given([created_with("100")]).when(by(Sender::TransferProcess, debit("1", 0))).then_refused(not_found.clone());
    // A transfer's debit goes as the customer who asked: only the owner's goes through.
    given([created_with("100")]).when(by(customer(), debit("1", 0))).then([debited("1")]);
    given([created_with("100")]).when(by(stranger(), debit("1", 0))).then_refused(not_found);
}

#[test]
fn reasons_are_trimmed_and_bounded() {
    assert_eq!(reason("  audit ").as_str(), "audit");
    assert_eq!(Reason::parse(" "), Err(ReasonError::Empty));
    assert_eq!(Reason::parse(&"x".repeat(201)), Err(ReasonError::TooLong));
    assert_eq!(Reason::parse(&"é".repeat(200)).map(|reason| reason.as_str().chars().count()), Ok(200));
    assert_eq!(Reason::parse("fraud\u{7}check"), Err(ReasonError::ControlCharacter));
    // A trailing newline is trimmed away before control characters are looked for.
    assert_eq!(reason("audit\n").as_str(), "audit");
}

#[test]
fn owner_and_reason_refusals_say_what_to_fix() {
    // Users read these: the app shows them and the API answers with them.
    assert_eq!(OwnerIdError::Empty.to_string(), "the owner must not be empty");
    assert_eq!(
        OwnerIdError::TooLong.to_string(),
        format!("the owner must be at most {} characters long", OwnerId::MAX_CHARS)
    );
    assert_eq!(OwnerIdError::ControlCharacter.to_string(), "the owner must not contain control characters");
    assert_eq!(ReasonError::Empty.to_string(), "a reason is required");
    assert_eq!(
        ReasonError::TooLong.to_string(),
        format!("the reason must be at most {} characters long", Reason::MAX_CHARS)
    );
    assert_eq!(ReasonError::ControlCharacter.to_string(), "the reason must not contain control characters");
}

#[test]
fn an_owner_is_forgotten_once_the_account_is_closed_and_then_owns_nothing() {
    let alice = OwnerId::parse("alice").unwrap();
    let created = AccountEvent::AccountCreated { owner_id: alice.clone(), initial_balance: Money::parse("0").unwrap() };
    let open = evolve(AccountState::default(), &created);
    assert_eq!(forget_owner(&open), Err(DomainError::AccountNotClosed));
    let closed = evolve(open, &AccountEvent::AccountClosed);
    assert_eq!(forget_owner(&closed), Ok(vec![AccountEvent::OwnerForgotten]));
    let forgotten = evolve(closed, &AccountEvent::OwnerForgotten);
    assert_eq!(forgotten.owner_id(), Some(&OwnerId::forgotten()));
    assert_eq!(forget_owner(&forgotten), Ok(vec![]), "forgetting twice changes nothing");
    // Whoever takes the name later sends as a customer named `alice`: it is not the owner.
    let deposit = CommandBy {
        by: Sender::Customer(alice),
        command: AccountCommand::Deposit { amount: Amount::parse("1").unwrap() },
    };
    assert_eq!(decide_for(&forgotten, &deposit), Err(DomainError::AccountNotFound));
    assert_eq!(forget_owner(&AccountState::NotCreated), Err(DomainError::AccountNotFound));
}
