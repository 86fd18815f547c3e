//! Given these events, when this command, then these events (or this refusal): decide tests
//! that read like the domain.
//!
//! A test states a history, a command and what the decider answers; the harness folds the
//! history with `evolve`, asks `decide` and compares. On a mismatch it panics with the history,
//! the command, what was expected and what came, so a failing test explains itself. Our own small
//! version of cqrs-es's `TestFramework`, for deciders that are plain functions.

use std::fmt::{Debug, Write};

/// A pure decider's state and events: what its history folds into.
///
/// Its `decide` is apart, in [`Decides`], so that one decider can take several kinds of command
/// over the same history: the account takes a bare command, and one with its sender.
pub(crate) trait Decider {
    type State: Default;
    type Event: Debug + PartialEq;
    type Error: Debug + PartialEq;

    /// Folds one event into the state.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
}

/// A decider's answer to one kind of command.
pub(crate) trait Decides<Command>: Decider {
    fn decide(state: &Self::State, command: &Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// The history a test starts from (none for a decider that does not exist yet).
pub(crate) fn given<D: Decider>(history: impl IntoIterator<Item = D::Event>) -> Given<D> {
    Given { history: history.into_iter().collect() }
}

/// A history, waiting for its command.
pub(crate) struct Given<D: Decider> {
    history: Vec<D::Event>,
}

impl<D: Decider> Given<D> {
    /// Decides `command` on the state the history folds into.
    pub(crate) fn when<Command: Debug>(self, command: Command) -> When<D, Command>
    where
        D: Decides<Command>,
    {
        let state = self.history.iter().fold(D::State::default(), D::evolve);
        let answer = D::decide(&state, &command);
        When { history: self.history, command, answer }
    }
}

/// A history, a command and the decider's answer, waiting for what the test expects.
pub(crate) struct When<D: Decider, Command> {
    history: Vec<D::Event>,
    command: Command,
    answer: Result<Vec<D::Event>, D::Error>,
}

impl<D: Decider, Command: Debug> When<D, Command> {
    /// Asserts that the command was taken and caused exactly `expected`, in order.
    ///
    /// Returns the state after the history and those events, for a test that goes on to check
    /// what they did.
    #[track_caller]
    pub(crate) fn then(self, expected: impl IntoIterator<Item = D::Event>) -> D::State {
        let expected = Ok(expected.into_iter().collect());
        if self.answer != expected {
            panic!("{}", mismatch(&self.history, &self.command, &expected, &self.answer));
        }
        self.history.iter().chain(expected.iter().flatten()).fold(D::State::default(), D::evolve)
    }

    /// Asserts that the command was refused with `expected`.
    #[track_caller]
    pub(crate) fn then_refused(self, expected: D::Error) {
        let expected = Err(expected);
        if self.answer != expected {
            panic!("{}", mismatch(&self.history, &self.command, &expected, &self.answer));
        }
    }
}

/// What a failed expectation says: the whole case, then what was expected and what came.
fn mismatch<Event: Debug, Error: Debug>(
    history: &[Event],
    command: &impl Debug,
    expected: &Result<Vec<Event>, Error>,
    got: &Result<Vec<Event>, Error>,
) -> String {
    let mut text = String::from("given/when/then: the decider did not answer as expected\n");
    text.push_str("given:\n");
    push_events(&mut text, history);
    let _ = writeln!(text, "when:\n    {command:?}");
    text.push_str("then expected ");
    push_answer(&mut text, expected);
    text.push_str("but got ");
    push_answer(&mut text, got);
    text
}

fn push_answer<Event: Debug, Error: Debug>(text: &mut String, answer: &Result<Vec<Event>, Error>) {
    match answer {
        Ok(events) => {
            text.push_str("the events:\n");
            push_events(text, events);
        }
        Err(refusal) => {
            let _ = writeln!(text, "the refusal:\n    {refusal:?}");
        }
    }
}

fn push_events<Event: Debug>(text: &mut String, events: &[Event]) {
    if events.is_empty() {
        text.push_str("    (no events)\n");
    }
    for event in events {
        let _ = writeln!(text, "    {event:?}");
    }
}

#[cfg(test)]
mod tests {
    //! The harness on a decider of its own, small enough to get wrong on purpose: a counter
    //! that never goes below zero.

    use super::*;

    struct Counter;

    #[derive(Debug, PartialEq)]
    enum Counted {
        Up,
        Down,
    }

    #[derive(Debug, PartialEq)]
    struct BelowZero;

    #[derive(Debug)]
    enum Count {
        Up,
        Down,
    }

    impl Decider for Counter {
        type State = u32;
        type Event = Counted;
        type Error = BelowZero;

        fn evolve(state: u32, event: &Counted) -> u32 {
            match event {
                Counted::Up => state + 1,
                Counted::Down => state.saturating_sub(1),
            }
        }
    }

    impl Decides<Count> for Counter {
        fn decide(state: &u32, command: &Count) -> Result<Vec<Counted>, BelowZero> {
            match command {
                Count::Up => Ok(vec![Counted::Up]),
                Count::Down if *state == 0 => Err(BelowZero),
                Count::Down => Ok(vec![Counted::Down]),
            }
        }
    }

    fn given(history: impl IntoIterator<Item = Counted>) -> Given<Counter> {
        super::given(history)
    }

    #[test]
    fn a_right_expectation_passes_and_gives_the_state_after() {
        assert_eq!(given([Counted::Up]).when(Count::Up).then([Counted::Up]), 2);
        given([Counted::Up, Counted::Down]).when(Count::Down).then_refused(BelowZero);
    }

    #[test]
    #[should_panic(expected = "then expected the events:\n    Down\nbut got the refusal:\n    BelowZero")]
    fn a_wrong_expectation_fails() {
        given([]).when(Count::Down).then([Counted::Down]);
    }

    #[test]
    #[should_panic(expected = "then expected the refusal:\n    BelowZero\nbut got the events:\n    Down")]
    fn a_refusal_that_does_not_come_fails() {
        given([Counted::Up]).when(Count::Down).then_refused(BelowZero);
    }

    #[test]
    fn a_failure_shows_the_history_the_command_and_both_answers() {
        let history = [Counted::Up, Counted::Down];
        let message = mismatch(&history, &Count::Up, &Err(BelowZero), &Ok(vec![Counted::Up]));
        assert_eq!(
            message,
            "given/when/then: the decider did not answer as expected\n\
             given:\n    Up\n    Down\n\
             when:\n    Up\n\
             then expected the refusal:\n    BelowZero\n\
             but got the events:\n    Up\n"
        );
        let none: [Counted; 0] = [];
        assert!(mismatch(&none, &Count::Up, &Ok(vec![]), &Err(BelowZero)).contains("given:\n    (no events)\n"));
    }
}
