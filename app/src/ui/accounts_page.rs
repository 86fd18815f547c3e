//! All accounts, from the read model: filtered by owner, or only the high-value ones; and the
//! form that opens a new one.

use eventstore::Position;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::components::{A, Form};
use leptos_router::hooks::{use_navigate, use_query_map};
use uuid::Uuid;

use super::format::{Money, Time};
use super::live::use_live;
use super::polling::poll_while_visible;
use crate::api::commands::create_account;
use crate::api::queries::{high_value_accounts, list_accounts};
use crate::api::{AccountList, AccountView, ApiError, CommandAccepted, ErrorCode};
use bank::contract::{AccountStatusView, PageCursor};
use bank::domain::{self, OwnerId};

/// Which accounts the table lists, from the page's query string (`?owner=…` or `?min=…`), so
/// that every view has an address and works before the WASM has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listing {
    All,
    Owner(String),
    /// The text the user typed; parsed by the domain's `Money`.
    HighValue(String),
}

/// The list, the page before `before` (a list's `nextPage`, from the address) if given, read at
/// or past `after` (a live message's position) when given.
async fn load(listing: Listing, before: Option<String>, after: Option<Position>) -> Result<AccountList, ApiError> {
    let before = before.map(|token| token.parse::<PageCursor>().map_err(ApiError::invalid_request)).transpose()?;
    match listing {
        Listing::All => list_accounts(None, before, after).await,
        Listing::Owner(owner) => list_accounts(Some(owner), before, after).await,
        Listing::HighValue(min) => {
            let min = domain::Money::parse(&min)
                .map_err(|e| ApiError::new(ErrorCode::InvalidAmount, format!("Invalid minimum balance: {e}")))?;
            high_value_accounts(min.value().into(), after).await
        }
    }
}

#[component]
pub fn AccountsPage() -> impl IntoView {
    let query = use_query_map();
    let listing = Memo::new(move |_| {
        query.with(|q| {
            match (q.get("min").filter(|m| !m.is_empty()), q.get("owner").filter(|o| !o.trim().is_empty())) {
                (Some(min), _) => Listing::HighValue(min),
                (None, Some(owner)) => Listing::Owner(owner.trim().to_owned()),
                (None, None) => Listing::All,
            }
        })
    });
    // The position the list must be read at or past: a live message's. Read by the fetcher,
    // not a key of the resource (a resource keyed on another signal is fetched twice on the
    // server and hydrates out of step).
    let after = RwSignal::new(None::<Position>);
    let before = Memo::new(move |_| query.with(|q| q.get("before").filter(|token| !token.is_empty())));
    let accounts = Resource::new(
        move || (listing.get(), before.get()),
        move |(listing, before)| load(listing, before, after.get_untracked()),
    );
    poll_while_visible(move || accounts.refetch());
    // A new account may belong in the list; a changed one matters if it is listed. The list is
    // read at or past the message's position: a read store (Redis, a replica) a moment behind
    // would otherwise answer without the change, and no later message would correct it.
    use_live().on_change_with(
        move |progress| {
            progress.everything
                || !progress.opened.is_empty()
                || accounts.get_untracked().and_then(Result::ok).is_some_and(|list| {
                    list.accounts.iter().any(|account| progress.accounts.contains(&account.account_id))
                })
        },
        move |progress| {
            after.set(Some(progress.position));
            accounts.refetch();
        },
    );

    view! {
        <div class="accounts-layout">
            <CreateAccountForm />
            <section class="card">
                <h1>"Accounts"</h1>
                <ListingFilters listing />
                <Transition fallback=|| view! { <p class="loading">"Loading accounts…"</p> }>
                    {move || accounts.get().map(|result| match result {
                        Ok(list) if list.accounts.is_empty() => view! {
                            <p class="empty" data-testid="no-accounts">"No accounts here yet."</p>
                        }.into_any(),
                        Ok(list) => view! {
                            <AccountTable accounts=list.accounts />
                            <Pages listing next=list.next_page first=before.with(Option::is_none) />
                        }.into_any(),
                        Err(error) => view! { <p class="form-error" role="alert">{error.message}</p> }.into_any(),
                    })}
                </Transition>
            </section>
        </div>
    }
}

/// Links to the next (older) page of the list, and back to its first: plain links, so that
/// every page has an address.
#[component]
fn Pages(listing: Memo<Listing>, next: Option<PageCursor>, first: bool) -> impl IntoView {
    let filter = move || match listing.get_untracked() {
        Listing::Owner(owner) => format!("owner={}&", url_encoded(&owner)),
        _ => String::new(),
    };
    let newest = format!("/?{}", filter());
    let newest = newest.trim_end_matches(['&', '?']).to_owned();
    view! {
        <p class="pages">
            {(!first).then(|| view! { <A href=newest>"← Newest"</A> })}
            {next.map(|next| view! {
                " " <A href=format!("/?{}before={next}", filter()) attr:data-testid="older-accounts">"Older accounts →"</A>
            })}
        </p>
    }
}

/// `text` as a query string value: letters, digits and `-_.~` as they are, the rest as `%XX`.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(byte).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The two ways to narrow the list (an owner, for operators; a minimum balance) and what it
/// shows now.
#[component]
fn ListingFilters(listing: Memo<Listing>) -> impl IntoView {
    let caption = move || match listing.get() {
        Listing::All => "The newest accounts, 100 a page".to_owned(),
        Listing::Owner(owner) => format!("Accounts of {owner}"),
        Listing::HighValue(min) => format!("High-value accounts: balance at least {min}, highest first (at most 100)"),
    };
    view! {
        <div class="filters">
            // Customers see their own accounts only; operators may narrow all to one owner.
            <super::identity_pages::OperatorsOnly>
                <Form method="GET" action="/">
                    <label for="owner-filter">"Filter by owner"</label>
                    <div class="money-form-row">
                        <input id="owner-filter" name="owner" type="search" autocomplete="off"
                            prop:value=move || match listing.get() { Listing::Owner(o) => o, _ => String::new() } />
                        <button type="submit">"Filter"</button>
                    </div>
                </Form>
            </super::identity_pages::OperatorsOnly>
            <Form method="GET" action="/">
                <label for="min-balance">"Minimum balance"</label>
                <div class="money-form-row">
                    <input id="min-balance" name="min" type="text" inputmode="decimal" autocomplete="off"
                        prop:value=move || match listing.get() { Listing::HighValue(m) => m, _ => String::new() } />
                    <button type="submit">"High-value"</button>
                </div>
            </Form>
            <p class="showing">
                <span data-testid="listing-caption">{caption}</span>
                {move || (listing.get() != Listing::All).then(|| view! { " · " <A href="/">"Show all"</A> })}
            </p>
        </div>
    }
}

#[component]
fn AccountTable(accounts: Vec<AccountView>) -> impl IntoView {
    view! {
        <div class="table-scroll" tabindex="0">
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
                            <td>
                                <A href=format!("/accounts/{}", account.account_id)>{account.owner_id}</A>
                                {(account.status != AccountStatusView::Active).then(|| view! {
                                    " " <span class=format!("status-tag {}", account.status.as_str())>{account.status.as_str()}</span>
                                })}
                            </td>
                            <td class="numeric"><Money value={account.current_balance} /></td>
                            <td class="numeric">{account.transaction_count}</td>
                            <td><Time at={account.last_transaction} /></td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// An initial balance, checked in the browser by the domain's own parser, for an account of the
/// signed-in user's; on success the browser goes to the new account, asking the read model to
/// catch up with the command.
#[component]
fn CreateAccountForm() -> impl IntoView {
    let owner = move || super::identity_pages::signed_in().map(|user| user.username).unwrap_or_default();
    let initial_balance = RwSignal::new(String::from("0"));
    let error = RwSignal::new(None::<String>);
    let navigate = use_navigate();

    let create = Action::new(|(owner, initial_balance, command_id): &(OwnerId, domain::Money, Uuid)| {
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
        let parsed = OwnerId::parse(&untrack(owner)).map_err(|e| format!("Invalid owner: {e}")).and_then(|owner| {
            domain::Money::parse(&initial_balance.get_untracked())
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
                <p class="owner">"For " <strong data-testid="new-account-owner"><Transition fallback=|| ()>{owner}</Transition></strong></p>
                <label for="initial-balance">"Initial balance"</label>
                <input id="initial-balance" name="initialBalance" type="text" inputmode="decimal"
                    aria-describedby="create-error" bind:value=initial_balance />
                <button type="submit" disabled={
                    let ready = super::hydrated();
                    move || !ready.get() || pending.get()
                }>
                    {move || if pending.get() { "Processing…" } else { "Create account" }}
                </button>
                <p id="create-error" class="form-error" role="alert" data-testid="create-error">{move || error.get()}</p>
            </form>
        </section>
    }
}
