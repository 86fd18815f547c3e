//! Transfers on the account page: the form that sends one, and the account's transfers (sent
//! and received) with each one's timeline, from the transfers read model. A transfer goes on by
//! itself after it is requested, so the page asks again while one of them is under way.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::components::A;
use uuid::Uuid;

use super::format;
use super::money_form::{clear_if_unchanged, show_response};
use crate::api::commands::transfer;
use crate::api::queries::account_transfers;
use crate::api::{ApiError, TransferAccepted, TransferList, TransferView};
use bank::contract::{PageCursor, TransferStateView};
use bank::domain::Amount;

/// The page of the account's transfers shown: the newest, or those before a cursor.
pub type TransfersPage = RwSignal<Option<PageCursor>>;

/// The account's transfers, a page at a time, for the account page to create with its other
/// resources.
pub fn transfers_resource(
    account_id: Memo<Option<Uuid>>,
    page: TransfersPage,
) -> Resource<Result<TransferList, ApiError>> {
    Resource::new(
        move || (account_id.get(), page.get()),
        |(account_id, before)| async move {
            match account_id {
                Some(account_id) => account_transfers(account_id, None, before).await,
                None => Err(ApiError::invalid_request("no account")),
            }
        },
    )
}

/// Whether the list should be read again: a transfer shown is still under way, one this page
/// sent is not listed yet, or the transfers read model is behind what the account's figures
/// already show (`account_as_of`: a transfer that moved the balance may not be listed yet).
pub fn worth_reading_again(
    transfers: &Resource<Result<TransferList, ApiError>>,
    sent: &[Uuid],
    account_as_of: Option<eventstore::Position>,
) -> bool {
    transfers.with_untracked(|list| match list.as_ref().and_then(|list| list.as_ref().ok()) {
        Some(list) => {
            list.transfers.iter().any(|t| !t.state.is_finished())
                || sent.iter().any(|id| !list.transfers.iter().any(|t| t.transfer_id == *id))
                || account_as_of.is_some_and(|account| list.as_of < account)
        }
        None => false,
    })
}

/// The recipient's account number and an amount. Both are checked in the browser (the amount
/// with the server's own parser); the server checks them again, and the source's balance is
/// checked when the transfer debits it.
#[component]
pub fn TransferForm(account_id: Uuid, on_accepted: Callback<TransferAccepted>) -> impl IntoView {
    let to_text = RwSignal::new(String::new());
    let amount_text = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    // What was submitted, so that a success clears the amount only if the user has not typed
    // another one while the request ran.
    let submitted = RwSignal::new(String::new());
    let send = Action::new(move |(to, amount, command_id): &(Uuid, Amount, Uuid)| {
        let (to, amount, command_id) = (*to, *amount, *command_id);
        async move { transfer(account_id, to, amount.value().into(), Some(command_id)).await }
    });
    let pending = send.pending();
    show_response(send.value(), error, move |accepted| {
        clear_if_unchanged(amount_text, submitted);
        on_accepted.run(accepted);
    });
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        if pending.get_untracked() {
            return;
        }
        let Ok(to) = Uuid::parse_str(to_text.get_untracked().trim()) else {
            error.set(Some("Enter the recipient's account number (a UUID)".to_owned()));
            return;
        };
        if to == account_id {
            error.set(Some("Money cannot move from an account to itself".to_owned()));
            return;
        }
        let text = amount_text.get_untracked();
        match Amount::parse(&text) {
            Ok(amount) => {
                error.set(None);
                submitted.set(text);
                send.dispatch((to, amount, Uuid::new_v4()));
            }
            Err(invalid) => error.set(Some(format!("Invalid amount: {invalid}"))),
        }
    };
    view! {
        <form class="money-form transfer-form" data-testid="transfer-form" on:submit=submit>
            <label for="transfer-to">"Transfer to account"</label>
            <input
                id="transfer-to"
                name="to"
                type="text"
                autocomplete="off"
                spellcheck="false"
                placeholder="recipient's account number"
                bind:value=to_text
            />
            <label for="transfer-amount">"Transfer amount"</label>
            <div class="money-form-row">
                <input
                    id="transfer-amount"
                    name="amount"
                    type="text"
                    inputmode="decimal"
                    autocomplete="off"
                    placeholder="0.00"
                    bind:value=amount_text
                />
                <button type="submit" disabled=move || pending.get()>
                    {move || if pending.get() { "Sending…" } else { "Transfer" }}
                </button>
            </div>
            <p class="form-error" role="alert" data-testid="transfer-error">{move || error.get()}</p>
        </form>
    }
}

/// The account's transfers, newest first, each with its steps as they happened.
#[component]
pub fn TransfersList(
    account_id: Memo<Option<Uuid>>,
    transfers: Resource<Result<TransferList, ApiError>>,
    page: TransfersPage,
) -> impl IntoView {
    let next = move || transfers.get().and_then(Result::ok).and_then(|list| list.next_page);
    view! {
        <section class="card transfers" data-testid="transfers">
            <h2>"Transfers"</h2>
            <p class="hint">
                "A transfer is its own stream of events: requested, then the source is debited and the target credited — or, if the target refuses the money, it is refunded."
            </p>
            {move || {
                let list = transfers.get().and_then(Result::ok);
                match list {
                    Some(list) if !list.transfers.is_empty() => {
                        let own = account_id.get();
                        view! {
                            <ol class="transfer-list">
                                {list.transfers.into_iter().map(|t| view! { <TransferRow transfer=t own /> }).collect_view()}
                            </ol>
                        }
                        .into_any()
                    }
                    Some(_) => view! { <p class="empty">"No transfers yet."</p> }.into_any(),
                    None => ().into_any(),
                }
            }}
            <p class="pages">
                {move || page.get().is_some().then(|| view! {
                    <button type="button" class="link" on:click=move |_| page.set(None)>"← Newest"</button>
                })}
                {move || next().map(|next| view! {
                    " " <button type="button" class="link" data-testid="older-transfers"
                        on:click=move |_| page.set(Some(next))>"Older transfers →"</button>
                })}
            </p>
            <p class="form-error" role="alert">{move || transfers.get().and_then(Result::err).map(|e| e.message)}</p>
        </section>
    }
}

#[component]
fn TransferRow(transfer: TransferView, own: Option<Uuid>) -> impl IntoView {
    let sent = own == Some(transfer.from_account_id);
    let other = if sent { transfer.to_account_id } else { transfer.from_account_id };
    let (direction, sign) = if sent { ("Sent to", "−") } else { ("Received from", "+") };
    let state = transfer.state;
    let label = match state {
        TransferStateView::Requested => "requested",
        TransferStateView::Debited => "on its way",
        TransferStateView::Completed => "completed",
        TransferStateView::Failed if transfer.refunded_at.is_some() => "refunded",
        TransferStateView::Failed => "failed",
    };
    // Each step that happened, in order, with its time.
    let mut steps = vec![("requested", Some(transfer.requested_at))];
    steps.push(("debited", transfer.debited_at));
    if transfer.refunded_at.is_some() {
        steps.push(("refunded", transfer.refunded_at));
    } else {
        steps.push(("credited", transfer.credited_at));
    }
    let last = match state {
        TransferStateView::Failed => "failed",
        _ => "completed",
    };
    steps.push((last, transfer.finished_at));
    let timeline = steps
        .into_iter()
        // A failed transfer shows the steps it took; one under way, those still to come too.
        .filter(|(_, at)| at.is_some() || state != TransferStateView::Failed)
        .map(|(step, at)| {
            let done = at.is_some();
            let title = at.map(format::time).unwrap_or_else(|| "not yet".to_owned());
            let said = if done { format!(", {title}") } else { ", not yet".to_owned() };
            view! {
                <li class="step" class:done=done data-step=step title=title.clone()>
                    {step}<span class="visually-hidden">{said}</span>
                </li>
            }
        })
        .collect_view();
    view! {
        <li class="transfer" data-testid="transfer" data-state=state.as_str() data-transfer-id=transfer.transfer_id.to_string()>
            <div class="transfer-head">
                <span class="direction">{direction} " "</span>
                <A href=format!("/accounts/{other}")><code>{other.to_string()[..8].to_owned()}</code></A>
                <span class="amount" class:outgoing=sent>{sign} {format::money(transfer.amount)}</span>
                <span class=format!("transfer-state {label}") data-testid="transfer-state">{label}</span>
            </div>
            <ol class="timeline" aria-label="steps">{timeline}</ol>
            {transfer.reason.map(|reason| view! { <p class="reason" data-testid="transfer-reason">{reason}</p> })}
        </li>
    }
}
