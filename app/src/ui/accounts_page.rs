//! All accounts, from the read model, and the form that opens a new one.

use std::time::Duration;

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;
use uuid::Uuid;

use super::format;
use super::polling::poll_every;
use crate::api::commands::create_account;
use crate::api::queries::list_accounts;
use crate::api::{AccountView, ApiError, CommandAccepted};
use crate::domain::{Money, OwnerId};

#[component]
pub fn AccountsPage() -> impl IntoView {
    let accounts = Resource::new(|| (), |_| list_accounts(None));
    poll_every(Duration::from_secs(2), move || accounts.refetch());

    view! {
        <div class="accounts-layout">
            <CreateAccountForm />
            <section class="card">
                <h1>"Accounts"</h1>
                <Transition fallback=|| view! { <p class="loading">"Loading accounts…"</p> }>
                    {move || accounts.get().map(|result| match result {
                        Ok(list) if list.accounts.is_empty() => view! {
                            <p class="empty">"No accounts yet. Create the first one."</p>
                        }.into_any(),
                        Ok(list) => view! { <AccountTable accounts=list.accounts /> }.into_any(),
                        Err(error) => view! { <p class="form-error" role="alert">{error.message}</p> }.into_any(),
                    })}
                </Transition>
            </section>
        </div>
    }
}

#[component]
fn AccountTable(accounts: Vec<AccountView>) -> impl IntoView {
    view! {
        <table class="accounts" data-testid="accounts-table">
            <thead>
                <tr>
                    <th scope="col">"Owner"</th>
                    <th scope="col" class="numeric">"Balance"</th>
                    <th scope="col" class="numeric">"Transactions"</th>
                    <th scope="col">"Last activity"</th>
                </tr>
            </thead>
            <tbody>
                {accounts.into_iter().map(|account| view! {
                    <tr>
                        <td><A href=format!("/accounts/{}", account.account_id)>{account.owner_id}</A></td>
                        <td class="numeric">{format::money(account.current_balance)}</td>
                        <td class="numeric">{account.transaction_count}</td>
                        <td>{format::time(account.last_transaction)}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// Owner and initial balance, checked in the browser by the domain's own parsers; on success
/// the browser goes to the new account, asking the read model to catch up with the command.
#[component]
fn CreateAccountForm() -> impl IntoView {
    let owner = RwSignal::new(String::new());
    let initial_balance = RwSignal::new(String::from("0"));
    let error = RwSignal::new(None::<String>);
    let navigate = use_navigate();

    let create = Action::new(|(owner, initial_balance, command_id): &(OwnerId, Money, Uuid)| {
        let (owner, initial_balance, command_id) = (owner.to_string(), *initial_balance, *command_id);
        async move { create_account(owner, initial_balance.value().into(), Some(command_id)).await }
    });
    let pending = create.pending();

    Effect::new(move |_| match create.value().get() {
        Some(Ok(CommandAccepted { account_id, position, .. })) => {
            navigate(&format!("/accounts/{account_id}?after={position}"), Default::default());
        }
        Some(Err(ApiError { message, .. })) => error.set(Some(message)),
        None => {}
    });

    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        if pending.get_untracked() {
            return;
        }
        let parsed = OwnerId::parse(&owner.get_untracked())
            .map_err(|e| format!("Invalid owner: {e}"))
            .and_then(|owner| {
                Money::parse(&initial_balance.get_untracked())
                    .map(|balance| (owner, balance))
                    .map_err(|e| format!("Invalid initial balance: {e}"))
            });
        match parsed {
            Ok((owner, balance)) => {
                error.set(None);
                create.dispatch((owner, balance, Uuid::new_v4()));
            }
            Err(message) => error.set(Some(message)),
        }
    };

    view! {
        <section class="card">
            <h2>"Open an account"</h2>
            <form class="create-account" data-testid="create-account-form" on:submit=submit>
                <label for="owner">"Owner"</label>
                <input id="owner" name="owner" type="text" autocomplete="off" bind:value=owner />
                <label for="initial-balance">"Initial balance"</label>
                <input id="initial-balance" name="initialBalance" type="text" inputmode="decimal" bind:value=initial_balance />
                <button type="submit" disabled=move || pending.get()>
                    {move || if pending.get() { "Processing…" } else { "Create account" }}
                </button>
                <p class="form-error" role="alert" data-testid="create-error">{move || error.get()}</p>
            </form>
        </section>
    }
}
