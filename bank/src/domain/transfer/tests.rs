//! Given a transfer's events, when this command (or this step's answer), then these events,
//! this refusal or this next step.

use time::macros::datetime;

use super::*;
use crate::domain::given_when_then::{self, Decider, Decides, Given};

/// The transfer's own record to the harness: [`decide`] over the history [`evolve`] folds.
struct Transfer;

impl Decider for Transfer {
    type State = TransferState;
    type Event = TransferEvent;
    type Error = TransferRefusal;

    fn evolve(state: TransferState, event: &TransferEvent) -> TransferState {
        super::evolve(state, event)
    }
}

impl Decides<TransferCommand> for Transfer {
    fn decide(state: &TransferState, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferRefusal> {
        super::decide(state, command)
    }
}

fn given(history: impl IntoIterator<Item = TransferEvent>) -> Given<Transfer> {
    given_when_then::given(history)
}

/// The state `events` fold into: what the process plans its next step from.
fn fold(events: &[TransferEvent]) -> TransferState {
    events.iter().fold(TransferState::default(), evolve)
}

const NOW: OffsetDateTime = datetime!(2026-12-03 12:00 UTC);

fn terms() -> TransferTerms {
    TransferTerms {
        from: Uuid::from_u128(1),
        to: Uuid::from_u128(2),
        amount: Amount::parse("25.50").unwrap(),
        requested_by: OwnerId::parse("alice").unwrap(),
        deadline: NOW + time::Duration::seconds(30),
    }
}

fn requested() -> TransferEvent {
    TransferEvent::TransferRequested(terms())
}

fn id() -> Uuid {
    Uuid::from_u128(9)
}

#[test]
fn a_request_starts_the_transfer_and_cannot_be_repeated() {
    given([]).when(TransferCommand::Request(terms())).then([requested()]);
    given([requested()]).when(TransferCommand::Request(terms())).then_refused(TransferRefusal::AlreadyRequested);
}

#[test]
fn money_does_not_move_from_an_account_to_itself() {
    let to_itself = TransferTerms { to: terms().from, ..terms() };
    given([]).when(TransferCommand::Request(to_itself)).then_refused(TransferRefusal::SameAccount);
}

#[test]
fn the_happy_path_debits_then_credits_then_completes() {
    let step = next_step(id(), &fold(&[requested()]), NOW).expect("a debit");
    assert_eq!((step.kind, step.account_id), (StepKind::Debit, terms().from));
    assert_eq!(step.command.by, Sender::Customer(terms().requested_by));
    let AfterStep::Record(command) = step.after(id(), Ok(())) else { panic!("a record") };
    let debited = given([requested()]).when(command).then([TransferEvent::SourceDebited]);

    let step = next_step(id(), &debited, NOW).expect("a credit");
    assert_eq!(
        (step.kind, step.account_id, &step.command.by),
        (StepKind::Credit, terms().to, &Sender::TransferProcess)
    );
    let AfterStep::Record(command) = step.after(id(), Ok(())) else { panic!("a record") };
    let completed = given([requested(), TransferEvent::SourceDebited])
        .when(command)
        .then([TransferEvent::TargetCredited, TransferEvent::TransferCompleted]);
    assert_eq!(completed, TransferState::Known { terms: terms(), stage: TransferStage::Completed });
    assert_eq!(next_step(id(), &completed, NOW), None, "nothing after completion");
}

#[test]
fn a_refused_debit_fails_the_transfer_without_a_refund() {
    let step = next_step(id(), &fold(&[requested()]), NOW).unwrap();
    let refusal = DomainError::AccountClosed;
    let AfterStep::Record(command) = step.after(id(), Err(&refusal)) else { panic!("a record") };
    given([requested()]).when(command).then([TransferEvent::TransferFailed {
        reason: "the source account refused: it does not take transfers now (frozen or closed)".into(),
    }]);
}

#[test]
fn a_refused_credit_refunds_the_source_then_fails_the_transfer() {
    let events = [requested(), TransferEvent::SourceDebited];
    let step = next_step(id(), &fold(&events), NOW).unwrap();
    let AfterStep::Refund { account_id, command, then } = step.after(id(), Err(&DomainError::TransferExpired)) else {
        panic!("a refund")
    };
    assert_eq!(account_id, terms().from);
    assert_eq!(command.command, AccountCommand::RefundTransfer { transfer_id: id(), amount: terms().amount });
    let reason = "the target account refused: the transfer's deadline passed".to_owned();
    given(events)
        .when(then)
        .then([TransferEvent::SourceRefunded { reason: reason.clone() }, TransferEvent::TransferFailed { reason }]);
}

#[test]
fn the_same_state_always_plans_the_same_step_and_a_recorded_step_is_not_planned_again() {
    // The process may be woken twice by one event, or by an event of a step it has since
    // recorded: the plan depends on the state only.
    let just_requested = fold(&[requested()]);
    assert_eq!(next_step(id(), &just_requested, NOW), next_step(id(), &just_requested, NOW));
    let debited = fold(&[requested(), TransferEvent::SourceDebited]);
    assert_eq!(next_step(id(), &debited, NOW).map(|step| step.kind), Some(StepKind::Credit));
    // Recording the debit twice: the second is refused, so nothing is recorded twice.
    given([requested(), TransferEvent::SourceDebited])
        .when(TransferCommand::RecordDebit)
        .then_refused(TransferRefusal::OutOfStep { stage: "debited".into() });
}

#[test]
fn steps_carry_the_time_they_run_at_and_the_deadline_so_the_account_can_refuse_late_ones() {
    let late = NOW + time::Duration::minutes(1);
    let step = next_step(id(), &fold(&[requested()]), late).unwrap();
    assert!(matches!(
        step.command.command,
        AccountCommand::DebitForTransfer { at, deadline, .. } if at == late && deadline == terms().deadline
    ));
}
