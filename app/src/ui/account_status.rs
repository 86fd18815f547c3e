//! An account's status on its page: a badge when it is frozen or closed, the owner's "close"
//! button (at a zero balance), and the operators' freeze and unfreeze.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use uuid::Uuid;

use super::confirm::ConfirmButton;
use super::money_form::show_response;
use crate::api::CommandAccepted;
use crate::api::commands::{close_account, freeze_account, unfreeze_account};
use bank::contract::AccountStatusView;
use bank::domain::Reason;

/// "Frozen: <reason>" or "Closed"; nothing for an active account.
#[component]
pub fn StatusBadge(status: Signal<Option<(AccountStatusView, Option<String>)>>) -> impl IntoView {
    move || {
        status.get().and_then(|(status, reason)| match status {
            AccountStatusView::Active => None,
            AccountStatusView::Frozen => Some(
                view! {
                    <p class="status-badge frozen" data-testid="account-status" role="status">
                        {format!(
                            "Frozen{} — no money moves in or out until an operator unfreezes it.",
                            reason.map(|reason| format!(": {reason}")).unwrap_or_default()
                        )}
                    </p>
                }
                .into_any(),
            ),
            AccountStatusView::Closed => Some(
                view! {
                    <p class="status-badge closed" data-testid="account-status" role="status">
                        "Closed — it takes nothing more."
                    </p>
                }
                .into_any(),
            ),
        })
    }
}

/// Closes the account; the server refuses it unless the balance is zero.
#[component]
pub fn CloseAccount(account_id: Uuid, on_accepted: Callback<CommandAccepted>) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let close = Action::new(move |command_id: &Uuid| {
        let command_id = *command_id;
        async move { close_account(account_id, Some(command_id)).await }
    });
    show_response(close.value(), error, move |accepted| on_accepted.run(accepted));
    view! {
        <div class="close-account" data-testid="close-account">
            <ConfirmButton
                label="Close account"
                question="Close this account for good? It takes no money in or out after."
                    .to_owned()
                confirm="Yes, close it"
                class="secondary"
                disabled=close.pending()
                on_confirm=Callback::new(move |()| {
                    close.dispatch(Uuid::new_v4());
                })
            />
            <p class="form-error" role="alert">{move || error.get()}</p>
        </div>
    }
}

/// An operator's freeze (with a reason) or unfreeze of any account.
#[component]
pub fn FreezeControls(account_id: Uuid, frozen: Signal<bool>, on_accepted: Callback<CommandAccepted>) -> impl IntoView {
    let reason_text = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let send = Action::new(move |(reason, command_id): &(Option<Reason>, Uuid)| {
        let (reason, command_id) = (reason.clone(), *command_id);
        async move {
            match reason {
                Some(reason) => freeze_account(account_id, reason.to_string(), Some(command_id)).await,
                None => unfreeze_account(account_id, Some(command_id)).await,
            }
        }
    });
    show_response(send.value(), error, move |accepted| {
        reason_text.set(String::new());
        on_accepted.run(accepted);
    });
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        if frozen.get_untracked() {
            send.dispatch((None, Uuid::new_v4()));
            return;
        }
        match Reason::parse(&reason_text.get_untracked()) {
            Ok(reason) => {
                send.dispatch((Some(reason), Uuid::new_v4()));
            }
            Err(invalid) => error.set(Some(format!("Invalid reason: {invalid}"))),
        }
    };
    view! {
        <form class="freeze-form" data-testid="freeze-form" on:submit=submit>
            <h3>"Operator"</h3>
            <Show when=move || !frozen.get()>
                <label for="freeze-reason">"Reason to freeze"</label>
                <input id="freeze-reason" name="reason" type="text" autocomplete="off" bind:value=reason_text />
            </Show>
            <button type="submit" disabled={
                let ready = super::hydrated();
                move || !ready.get() || send.pending().get()
            }>
                {move || if frozen.get() { "Unfreeze" } else { "Freeze" }}
            </button>
            <p class="form-error" role="alert">{move || error.get()}</p>
        </form>
    }
}
