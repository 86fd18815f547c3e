//! The deposit and withdraw forms.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use uuid::Uuid;

use crate::api::commands::{deposit, withdraw};
use crate::api::{ApiError, CommandAccepted};
use bank::domain::Amount;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyCommand {
    Deposit,
    Withdraw,
}

impl MoneyCommand {
    fn label(self) -> &'static str {
        match self {
            MoneyCommand::Deposit => "Deposit",
            MoneyCommand::Withdraw => "Withdraw",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            MoneyCommand::Deposit => "deposit",
            MoneyCommand::Withdraw => "withdraw",
        }
    }

    async fn send(self, account_id: Uuid, amount: Amount, command_id: Uuid) -> Result<CommandAccepted, ApiError> {
        let amount = amount.value().into();
        match self {
            MoneyCommand::Deposit => deposit(account_id, amount, Some(command_id)).await,
            MoneyCommand::Withdraw => withdraw(account_id, amount, Some(command_id)).await,
        }
    }
}

/// Shows a command's answer beside its form, once the browser has it: a refusal's message in
/// `error`; on success, `error` cleared and `accepted` called with the answer.
pub fn show_response<T: Clone + Send + Sync + 'static>(
    answer: impl Get<Value = Option<Result<T, ApiError>>> + 'static,
    error: RwSignal<Option<String>>,
    accepted: impl Fn(T) + 'static,
) {
    Effect::new(move |_| match answer.get() {
        Some(Ok(answer)) => {
            error.set(None);
            accepted(answer);
        }
        Some(Err(refusal)) => error.set(Some(refusal.message)),
        None => {}
    });
}

/// Clears `field` unless the user typed something else (than `submitted`) while the command ran.
pub fn clear_if_unchanged(field: RwSignal<String>, submitted: RwSignal<String>) {
    if field.get_untracked() == submitted.get_untracked() {
        field.set(String::new());
    }
}

/// An amount field and a button. The amount is checked in the browser with the server's own
/// `Amount` parser; the server checks it again. While the command runs the button is disabled
/// and says so; a refusal is shown next to the form.
#[component]
pub fn MoneyForm(
    kind: MoneyCommand,
    account_id: Uuid,
    /// Called with the command's answer once it is accepted.
    on_accepted: Callback<CommandAccepted>,
) -> impl IntoView {
    let amount_text = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);

    // One command id per submission: a retry of this submission is recognisable as such.
    let send = Action::new(move |(amount, command_id): &(Amount, Uuid)| {
        let (amount, command_id) = (*amount, *command_id);
        async move { kind.send(account_id, amount, command_id).await }
    });
    let pending = send.pending();

    // What was submitted, so that a success clears the field only if the user has not typed
    // something new while the command ran.
    let submitted = RwSignal::new(String::new());
    show_response(send.value(), error, move |accepted| {
        clear_if_unchanged(amount_text, submitted);
        on_accepted.run(accepted);
    });

    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        if pending.get_untracked() {
            return;
        }
        let text = amount_text.get_untracked();
        match Amount::parse(&text) {
            Ok(amount) => {
                error.set(None);
                submitted.set(text);
                send.dispatch((amount, Uuid::new_v4()));
            }
            Err(invalid) => error.set(Some(format!("Invalid amount: {invalid}"))),
        }
    };

    let input_id = format!("{}-amount", kind.slug());
    // The field names its error message, which screen readers then read with it.
    let error_id = format!("{}-error", kind.slug());
    view! {
        <form class="money-form" data-testid=format!("{}-form", kind.slug()) on:submit=submit>
            <label for=input_id.clone()>{kind.label()} " amount"</label>
            <div class="money-form-row">
                <input
                    id=input_id
                    name="amount"
                    type="text"
                    inputmode="decimal"
                    autocomplete="off"
                    placeholder="0.00"
                    aria-describedby=error_id.clone()
                    aria-invalid=move || if error.with(Option::is_some) { "true" } else { "false" }
                    bind:value=amount_text
                />
                <button type="submit" disabled={
                    let ready = super::hydrated();
                    move || !ready.get() || pending.get()
                }>
                    {move || if pending.get() { "Processing…" } else { kind.label() }}
                </button>
            </div>
            <p id=error_id class="form-error" role="alert" data-testid=format!("{}-error", kind.slug())>
                {move || error.get()}
            </p>
        </form>
    }
}
