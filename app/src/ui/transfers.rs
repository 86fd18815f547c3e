//! Transfers on the account page: the form that sends one, and the account's transfers (sent
//! and received) with each one's timeline, from the transfers read model. A transfer goes on by
//! itself after it is requested, so the page asks again while one of them is under way.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::components::A;
use uuid::Uuid;

use super::format::{self, Money};
use super::money_form::{clear_if_unchanged, show_response};
use crate::api::commands::transfer;
use crate::api::queries::{account_transfers, check_recipient, list_accounts};
use crate::api::{AccountView, ApiError, TransferAccepted, TransferList, TransferView};
use bank::contract::{PageCursor, TransferRecipient, TransferStateView};
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

/// A recipient and an amount. The recipient is one of the sender's other accounts, chosen from a
/// list, or an account number typed in: then the form asks whose account that is and shows the
/// owner's name for the sender to confirm before anything is sent (a mistyped number shows a
/// name they did not expect). Both are checked in the browser (the amount with the server's own
/// parser); the server checks them again, and the source's balance when the transfer debits it.
#[component]
pub fn TransferForm(account_id: Uuid, on_accepted: Callback<TransferAccepted>) -> impl IntoView {
    // The sender's accounts, read in the browser once the page is interactive (the form is not
    // usable before; a resource would hold the page's rendering on the server).
    let own_accounts = RwSignal::new(Vec::<AccountView>::new());
    Effect::new(move |_| {
        leptos::task::spawn_local(async move {
            if let Ok(list) = list_accounts(None, None, None).await {
                own_accounts.set(list.accounts);
            }
        });
    });
    // "" for an account number typed in, else one of the sender's accounts.
    let choice = RwSignal::new(String::new());
    let to_text = RwSignal::new(String::new());
    let amount_text = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    // What was submitted, so that a success clears the amount only if the user has not typed
    // another one while the request ran.
    let submitted = RwSignal::new(String::new());
    // A transfer to a typed account number: the amount waiting while its owner is looked up,
    // then the recipient shown for the sender to confirm.
    let asked = RwSignal::new(None::<(Amount, String)>);
    let confirming = RwSignal::new(None::<(TransferRecipient, Amount, String)>);
    let check = Action::new(move |to: &Uuid| {
        let to = *to;
        async move { check_recipient(to).await }
    });
    let send = Action::new(move |(to, amount, command_id): &(Uuid, Amount, Uuid)| {
        let (to, amount, command_id) = (*to, *amount, *command_id);
        async move { transfer(account_id, to, amount.value().into(), Some(command_id)).await }
    });
    let pending = Signal::derive(move || send.pending().get() || check.pending().get());
    show_response(send.value(), error, move |accepted| {
        clear_if_unchanged(amount_text, submitted);
        on_accepted.run(accepted);
    });
    show_response(check.value(), error, move |recipient| {
        if let Some((amount, text)) = asked.get_untracked() {
            confirming.set(Some((recipient, amount, text)));
        }
    });
    let dispatch = move |to: Uuid, amount: Amount, text: String| {
        error.set(None);
        submitted.set(text);
        send.dispatch((to, amount, Uuid::new_v4()));
    };
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        if pending.get_untracked() {
            return;
        }
        confirming.set(None);
        let chosen = choice.get_untracked();
        let typed = chosen.is_empty();
        let to_entered = if typed { to_text.get_untracked() } else { chosen };
        let Ok(to) = Uuid::parse_str(to_entered.trim()) else {
            error.set(Some("Enter the recipient's account number (a UUID)".to_owned()));
            return;
        };
        if to == account_id {
            error.set(Some("Money cannot move from an account to itself".to_owned()));
            return;
        }
        let text = amount_text.get_untracked();
        match Amount::parse(&text) {
            Ok(amount) if typed => {
                error.set(None);
                asked.set(Some((amount, text)));
                check.dispatch(to);
            }
            Ok(amount) => dispatch(to, amount, text),
            Err(invalid) => error.set(Some(format!("Invalid amount: {invalid}"))),
        }
    };
    let confirm = move |_| {
        if let Some((recipient, amount, text)) = confirming.get_untracked() {
            confirming.set(None);
            dispatch(recipient.account_id, amount, text);
        }
    };
    let others =
        move || own_accounts.get().into_iter().filter(|account| account.account_id != account_id).collect::<Vec<_>>();
    view! {
        <form class="money-form transfer-form" data-testid="transfer-form" on:submit=submit>
            <label for="transfer-choice">"Transfer to"</label>
            <select
                id="transfer-choice"
                prop:value=move || choice.get()
                on:change=move |event| {
                    choice.set(event_target_value(&event));
                    confirming.set(None);
                }
            >
                <option value="">"another account (enter its number)"</option>
                {move || others().into_iter().map(|account| {
                    let id = account.account_id.to_string();
                    let label = format!(
                        "{}'s account {} ({})",
                        account.owner_id,
                        &id[..8],
                        format::viewer_money(account.current_balance),
                    );
                    view! { <option value=id>{label}</option> }
                }).collect_view()}
            </select>
            <Show when=move || choice.with(String::is_empty)>
                <label for="transfer-to">"Transfer to account"</label>
                <input
                    id="transfer-to"
                    name="to"
                    type="text"
                    autocomplete="off"
                    spellcheck="false"
                    placeholder="recipient's account number"
                    aria-describedby="transfer-error"
                    bind:value=to_text
                />
            </Show>
            <label for="transfer-amount">"Transfer amount"</label>
            <div class="money-form-row">
                <input
                    id="transfer-amount"
                    name="amount"
                    type="text"
                    inputmode="decimal"
                    autocomplete="off"
                    placeholder="0.00"
                    aria-describedby="transfer-error"
                    bind:value=amount_text
                />
                <button type="submit" disabled={
                    let ready = super::hydrated();
                    move || !ready.get() || pending.get()
                }>
                    {move || if pending.get() { "Sending…" } else { "Transfer" }}
                </button>
            </div>
            {move || confirming.get().map(|(recipient, amount, _)| view! {
                <div class="confirm" role="group" aria-label="Confirm the transfer" data-testid="transfer-confirm">
                    <p>
                        "Send " <Money value={amount.value()} /> " to the account of "
                        <strong data-testid="recipient-owner">{recipient.owner_id}</strong> " ("
                        <code>{recipient.account_id.to_string()[..8].to_owned()}</code> ")?"
                    </p>
                    <button type="button" on:click=confirm>"Confirm transfer"</button>
                    " "
                    <button type="button" class="link" on:click=move |_| confirming.set(None)>"Cancel"</button>
                </div>
            })}
            <p id="transfer-error" class="form-error" role="alert" data-testid="transfer-error">{move || error.get()}</p>
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
                <span class="amount" class:outgoing=sent>{sign} <Money value={transfer.amount} /></span>
                <span class=format!("transfer-state {label}") data-testid="transfer-state">{label}</span>
            </div>
            <ol class="timeline" aria-label="steps">{timeline}</ol>
            {transfer.reason.map(|reason| view! { <p class="reason" data-testid="transfer-reason">{reason}</p> })}
        </li>
    }
}
