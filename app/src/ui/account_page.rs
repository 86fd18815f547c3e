//! One account: its figures from the read model, and the commands that change it.

use std::time::Duration;

use eventstore::Position;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};
use uuid::Uuid;

use super::format;
use super::money_form::{MoneyCommand, MoneyForm};
use super::polling::poll_every;
use crate::api::queries::get_account;
use crate::api::{AccountView, ApiError, CommandAccepted, ErrorCode};

#[component]
pub fn AccountPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let account_id = Memo::new(move |_| params.read().get("id").and_then(|id| Uuid::parse_str(&id).ok()));

    // The newest consistency token this page knows of: the one in the link that led here (a
    // just-created account), then each accepted command's. Queries ask the read model to catch
    // up with it, so the page never shows the account older than the user's own last command.
    let token = RwSignal::new(query.read_untracked().get("after").and_then(|t| t.parse::<Position>().ok()));

    let account = Resource::new(
        move || (account_id.get(), token.get()),
        |(account_id, after)| async move {
            match account_id {
                Some(account_id) => get_account(account_id, after).await,
                None => Err(ApiError::new(ErrorCode::AccountNotFound, "this is not an account number")),
            }
        },
    );
    poll_every(Duration::from_secs(2), move || account.refetch());

    let loaded = move || account.get().and_then(Result::ok);
    let on_accepted = Callback::new(move |accepted: CommandAccepted| token.set(Some(accepted.position)));

    view! {
        <p class="breadcrumbs"><A href="/">"← All accounts"</A></p>
        <Transition fallback=|| view! { <p class="loading">"Loading the account…"</p> }>
            <Show
                when=move || loaded().is_some()
                fallback=move || view! { <AccountMissing error=account.get().and_then(Result::err) /> }
            >
                <AccountFigures account=Signal::derive(loaded) token />
                <section class="card commands">
                    <h2>"Move money"</h2>
                    {move || account_id.get().map(|account_id| view! {
                        <div class="money-forms">
                            <MoneyForm kind=MoneyCommand::Deposit account_id on_accepted />
                            <MoneyForm kind=MoneyCommand::Withdraw account_id on_accepted />
                        </div>
                    })}
                </section>
            </Show>
        </Transition>
    }
}

#[component]
fn AccountFigures(account: Signal<Option<AccountView>>, token: RwSignal<Option<Position>>) -> impl IntoView {
    let field = move |read: fn(&AccountView) -> String| move || account.with(|a| a.as_ref().map(read).unwrap_or_default());
    // Behind while the read model has not yet reached the user's last command.
    let syncing = move || account.with(|a| matches!((a, token.get()), (Some(a), Some(t)) if a.as_of < t));
    view! {
        <section class="card account" data-testid="account">
            <header class="account-header">
                <div>
                    <h1>{field(|a| a.owner_id.clone())}</h1>
                    <p class="account-id">{field(|a| a.account_id.to_string())}</p>
                </div>
                <p class="sync-badge" class:syncing=syncing data-testid="sync-badge">
                    {move || if syncing() { "syncing…".to_owned() } else { "synced".to_owned() }}
                    <span class="as-of">{field(|a| format!(" as of #{}", a.as_of))}</span>
                </p>
            </header>
            <p class="balance">
                <span class="label">"Balance"</span>
                <span class="amount" data-testid="balance">{field(|a| format::money(a.current_balance))}</span>
            </p>
            <dl class="figures">
                <div><dt>"Total deposits"</dt><dd data-testid="total-deposits">{field(|a| format::money(a.total_deposits))}</dd></div>
                <div><dt>"Total withdrawals"</dt><dd data-testid="total-withdrawals">{field(|a| format::money(a.total_withdrawals))}</dd></div>
                <div><dt>"Transactions"</dt><dd data-testid="transaction-count">{field(|a| a.transaction_count.to_string())}</dd></div>
                <div><dt>"Last transaction"</dt><dd data-testid="last-transaction">{field(|a| format::time(a.last_transaction))}</dd></div>
                <div><dt>"Created"</dt><dd>{field(|a| format::time(a.created_at))}</dd></div>
            </dl>
        </section>
    }
}

#[component]
fn AccountMissing(error: Option<ApiError>) -> impl IntoView {
    let (title, message) = match error {
        Some(error) if error.code == ErrorCode::AccountNotFound => (
            "Account not found",
            "No account has this number, or it was created a moment ago and the read model has not caught up yet.".to_owned(),
        ),
        Some(error) => ("The account cannot be shown", error.message),
        None => ("Loading the account…", String::new()),
    };
    view! {
        <section class="card" data-testid="account-missing">
            <h1>{title}</h1>
            <p>{message}</p>
        </section>
    }
}
