//! One account: its figures from the read model (or, travelling in time, from the event
//! store), the commands that change it, its balance over time and its audit trail.

use eventstore::Position;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};
use rust_decimal::Decimal;
use time::OffsetDateTime;
use uuid::Uuid;

use super::account_status::{CloseAccount, FreezeControls, StatusBadge};
use super::audit_trail::{AuditTrail, audit_page};
use super::balance_chart::BalanceChart;
use super::format::{self, Time};
use super::identity_pages::OperatorsOnly;
use super::live::{Live, use_live};
use super::money_form::{MoneyCommand, MoneyForm};
use super::polling::{poll_status_while_visible, poll_while_visible};
use super::show_loaded::ShowLoaded;
use super::statement::StatementForm;
use super::sync_badge::SyncBadge;
use super::time_travel::{TimeTravel, TravelTo};
use super::transfers::{TransferForm, TransfersList, transfers_resource, worth_reading_again};
use crate::api::queries::accounts_read_model_lag;
use crate::api::queries::{account_at, account_ledger, get_account};
use crate::api::{AccountView, ApiError, CommandAccepted, ErrorCode, HistoricalAccount, Ledger, TransferAccepted};
use bank::contract::{AccountStatusView, ReadModelLag, TransferList};

/// What the figures show, whether read live or folded as of a version.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    balance: Decimal,
    total_deposits: Decimal,
    total_withdrawals: Decimal,
    transaction_count: i64,
    last_transaction: OffsetDateTime,
    created_at: OffsetDateTime,
}

impl From<&AccountView> for Figures {
    fn from(a: &AccountView) -> Figures {
        Figures {
            balance: a.current_balance,
            total_deposits: a.total_deposits,
            total_withdrawals: a.total_withdrawals,
            transaction_count: a.transaction_count,
            last_transaction: a.last_transaction,
            created_at: a.created_at,
        }
    }
}

impl From<&HistoricalAccount> for Figures {
    fn from(a: &HistoricalAccount) -> Figures {
        Figures {
            balance: a.balance,
            total_deposits: a.total_deposits,
            total_withdrawals: a.total_withdrawals,
            transaction_count: a.transaction_count,
            last_transaction: a.recorded_at,
            created_at: a.created_at,
        }
    }
}

#[component]
pub fn AccountPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let account_id = Memo::new(move |_| params.read().get("id").and_then(|id| Uuid::parse_str(&id).ok()));

    // The newest consistency token this page knows of: the one in the link that led here (a
    // just-created account), then each accepted command's. Queries ask the read model to catch
    // up with it, so the page never shows the account older than the user's own last command.
    let token = RwSignal::new(query.read_untracked().get("after").and_then(|t| t.parse::<Position>().ok()));
    let travel = RwSignal::new(None::<TravelTo>);
    let account = account_resource(account_id, token);
    let live = Signal::derive(move || account.get().and_then(Result::ok));
    let version = Memo::new(move |_| live.with(|a| a.as_ref().map_or(0, |a| a.version)));
    // Every resource is made here, keyed on what the address says, none on another's value:
    // a resource keyed on another would be fetched twice on the server and hydrate out of step.
    let historical = historical_resource(account_id, travel);
    // The chart is read at or past where the account's figures are (the ledger is a projection
    // of its own, a moment behind the summary or Redis): set before each re-read, not a key of
    // the resource (see above).
    let ledger_after = RwSignal::new(None::<Position>);
    let ledger = ledger_resource(account_id, ledger_after);
    let visited_pages = RwSignal::new(vec![None::<i64>]);
    let history = audit_page(account_id, visited_pages);
    let transfers_page = RwSignal::new(None);
    let transfers = transfers_resource(account_id, transfers_page);
    let projections = Resource::new(|| (), |_| accounts_read_model_lag());
    poll_while_visible(move || account.refetch());
    poll_status_while_visible(move || projections.refetch());
    // A transfer moves on by itself, partly in streams the live stream does not watch for this
    // account (the transfer's own): asked again while one is under way.
    let sent_transfers = RwSignal::new(Vec::<Uuid>::new());
    let account_as_of = Signal::derive(move || live.with(|a| a.as_ref().map(|a| a.as_of)));
    poll_status_while_visible(move || {
        read_transfers_again_while_under_way(transfers, sent_transfers, account_as_of);
        read_the_chart_again_while_behind(ledger, ledger_after, account_as_of);
    });
    on_change(account_id, move || {
        token.set(None);
        ledger_after.set(None);
        travel.set(None);
        visited_pages.set(vec![None]);
        sent_transfers.set(Vec::new());
        transfers_page.set(None);
    });
    let stream = use_live();
    read_again_on_the_stream(stream, account_id, token, account, projections);
    // When the account moves on, so do its chart and the newest page of its audit trail.
    on_change(version, move || {
        ledger_after.set(account_as_of.get_untracked());
        ledger.refetch();
        transfers.refetch();
        if visited_pages.with(|p| p.len() == 1) {
            history.refetch();
        }
    });

    let on_accepted = Callback::new(move |accepted: CommandAccepted| token.set(Some(accepted.position)));
    let on_transfer = Callback::new(move |accepted: TransferAccepted| {
        sent_transfers.update(|sent| sent.push(accepted.transfer_id));
        // The new transfer is on the newest page.
        transfers_page.set(None);
        transfers.refetch();
    });
    let historical_figures = Signal::derive(move || historical.get().and_then(Result::ok).flatten());
    let travel_error = move || historical.get().and_then(Result::err).map(|error| error.message);

    view! {
        <p class="breadcrumbs"><A href="/">"← All accounts"</A></p>
        <Transition fallback=|| view! { <p class="loading">"Loading the account…"</p> }>
            <ShowLoaded
                when=move || live.with(Option::is_some)
                fallback=move || view! { <AccountMissing error=account.get().and_then(Result::err) /> }
            >
                // Each section's view type erased: nested, they made one type whose rendering
                // took more than a 2 MiB stack in a debug build.
                {view! {
                    <AccountCard account_id live token travel historical=historical_figures projections live_stream=stream.connected />
                }.into_any()}
                {view! { <MoveMoney account_id live on_accepted on_transfer /> }.into_any()}
                {view! { <TransfersList account_id transfers page=transfers_page /> }.into_any()}
                {move || live.get().map(|account| view! {
                    <StatementForm account_id=account.account_id last_movement=account.last_transaction />
                }.into_any())}
                {view! { <TimeTravel latest_version=version.into() travel error=Signal::derive(travel_error) /> }.into_any()}
                {view! { <BalanceChart ledger=Signal::derive(move || ledger.get().flatten()) /> }.into_any()}
                {view! { <AuditTrail page=history pages=visited_pages /> }.into_any()}
            </ShowLoaded>
        </Transition>
    }
}

/// Runs `react` each time `value` changes, not for its first value. A link to another account
/// (a transfer's other side) keeps the page mounted with a new id, and what was particular to
/// the account before must go; a new version must refresh what follows it. An effect runs only
/// in the browser, after hydration: the first run only takes note.
fn on_change<T: Clone + PartialEq + Send + Sync + 'static>(value: Memo<T>, react: impl Fn() + 'static) {
    Effect::new(move |seen: Option<T>| {
        let now = value.get();
        if seen.is_some_and(|seen| seen != now) {
            react();
        }
        now
    });
}

/// When the live stream says the account changed, reads it again at or past the position the
/// message announces: a read store that has not got there yet (Redis, a moment behind Postgres)
/// must not answer with the balance from before, which no later message would correct.
fn read_again_on_the_stream(
    stream: Live,
    account_id: Memo<Option<Uuid>>,
    token: RwSignal<Option<Position>>,
    account: Resource<Result<AccountView, ApiError>>,
    projections: Resource<Result<ReadModelLag, ApiError>>,
) {
    stream.on_change_with(
        move |progress| account_id.get_untracked().is_some_and(|id| progress.concerns(id)),
        move |progress| {
            if !progress.everything && token.get_untracked().is_none_or(|token| token < progress.position) {
                token.set(Some(progress.position));
            } else {
                account.refetch();
            }
            projections.refetch();
        },
    );
}

/// The account as the read model has it, at or past `token`.
fn account_resource(
    account_id: Memo<Option<Uuid>>,
    token: RwSignal<Option<Position>>,
) -> Resource<Result<AccountView, ApiError>> {
    Resource::new(
        move || (account_id.get(), token.get()),
        |(account_id, after)| async move {
            match account_id {
                Some(account_id) => get_account(account_id, after).await,
                None => Err(ApiError::new(ErrorCode::AccountNotFound, "this is not an account number")),
            }
        },
    )
}

/// The account folded from the event store as of where `travel` points, if it points anywhere.
fn historical_resource(
    account_id: Memo<Option<Uuid>>,
    travel: RwSignal<Option<TravelTo>>,
) -> Resource<Result<Option<HistoricalAccount>, ApiError>> {
    Resource::new(
        move || (account_id.get(), travel.get()),
        |(account_id, travel)| async move {
            match (account_id, travel) {
                (Some(account_id), Some(TravelTo::Version(version))) => {
                    account_at(account_id, Some(version), None).await.map(Some)
                }
                (Some(account_id), Some(TravelTo::Moment(moment))) => {
                    account_at(account_id, None, Some(moment)).await.map(Some)
                }
                _ => Ok(None),
            }
        },
    )
}

/// The account's ledger for the chart, read at or past `after` (set before each re-read).
fn ledger_resource(account_id: Memo<Option<Uuid>>, after: RwSignal<Option<Position>>) -> Resource<Option<Ledger>> {
    Resource::new(
        move || account_id.get(),
        move |account_id| async move {
            match account_id {
                Some(account_id) => account_ledger(account_id, None, after.get_untracked()).await.ok(),
                None => None,
            }
        },
    )
}

/// Reads the transfers again while one this page sent is not yet listed.
fn read_transfers_again_while_under_way(
    transfers: Resource<Result<TransferList, ApiError>>,
    sent: RwSignal<Vec<Uuid>>,
    account_as_of: Signal<Option<Position>>,
) {
    // Those listed now need no waiting for.
    transfers.with_untracked(|list| {
        if let Some(Ok(list)) = list {
            sent.update(|sent| sent.retain(|id| !list.transfers.iter().any(|t| t.transfer_id == *id)));
        }
    });
    if sent.with_untracked(|sent| worth_reading_again(&transfers, sent, account_as_of.get_untracked())) {
        transfers.refetch();
    }
}

/// A chart read while the ledger was still behind the account's figures (its wait has a
/// bound) is read again until it has caught up.
fn read_the_chart_again_while_behind(
    ledger: Resource<Option<Ledger>>,
    ledger_after: RwSignal<Option<Position>>,
    account_as_of: Signal<Option<Position>>,
) {
    let account_as_of = account_as_of.get_untracked();
    let behind = ledger.with_untracked(|read| {
        read.as_ref().and_then(Option::as_ref).zip(account_as_of).is_some_and(|(ledger, at)| ledger.as_of < at)
    });
    if behind {
        ledger_after.set(account_as_of);
        ledger.refetch();
    }
}

/// Who owns the account, how current the page is, its status and its figures (or, travelling
/// in time, the figures then).
#[component]
fn AccountCard(
    account_id: Memo<Option<Uuid>>,
    live: Signal<Option<AccountView>>,
    token: RwSignal<Option<Position>>,
    travel: RwSignal<Option<TravelTo>>,
    historical: Signal<Option<HistoricalAccount>>,
    projections: Resource<Result<ReadModelLag, ApiError>>,
    live_stream: RwSignal<bool>,
) -> impl IntoView {
    let status = Signal::derive(move || live.with(|a| a.as_ref().map(|a| (a.status, a.status_reason.clone()))));
    let lag = move || {
        projections
            .get()
            .and_then(Result::ok)
            .map(|lag| format!("read model lag: {} · {:.1} s", format::events(lag.lag_events), lag.lag_seconds))
    };
    view! {
        <section class="card account" class:historical=move || historical.with(Option::is_some) data-testid="account">
            <header class="account-header">
                <div>
                    <h1>{move || live.with(|a| a.as_ref().map(|a| a.owner_id.clone()).unwrap_or_default())}</h1>
                    <p class="account-id">{move || account_id.get().map(|id| id.to_string()).unwrap_or_default()}</p>
                </div>
                <div class="sync">
                    <SyncBadge
                        as_of=Signal::derive(move || live.with(|a| a.as_ref().map(|a| a.as_of)))
                        token=token.into()
                        live=live_stream.into()
                        served_by=Signal::derive(move || live.with(|a| a.as_ref().map(|a| a.served_by)))
                    />
                    <p class="lag" data-testid="lag">{lag}</p>
                </div>
            </header>
            <StatusBadge status />
            {move || historical.get().map(|then| view! {
                <p class="historical-banner" role="status" data-testid="historical-banner">
                    <strong>"Historical view"</strong>
                    {format!(
                        " — version {} of {}, as recorded at {}, folded from the event store.",
                        then.version, then.latest_version, format::viewer_time(then.recorded_at)
                    )}
                    <button type="button" class="link" on:click=move |_| travel.set(None)>"Back to now"</button>
                </p>
            })}
            <FiguresView figures=Signal::derive(move || {
                historical
                    .with(|then| then.as_ref().map(Figures::from))
                    .or_else(|| live.with(|a| a.as_ref().map(Figures::from)))
            }) />
        </section>
    }
}

/// The commands that move money: deposit, withdraw, transfer; close an empty account; and, for
/// operators, freeze.
#[component]
fn MoveMoney(
    account_id: Memo<Option<Uuid>>,
    live: Signal<Option<AccountView>>,
    on_accepted: Callback<CommandAccepted>,
    on_transfer: Callback<TransferAccepted>,
) -> impl IntoView {
    let frozen =
        Signal::derive(move || live.with(|a| a.as_ref().is_some_and(|a| a.status == AccountStatusView::Frozen)));
    let closable = Signal::derive(move || {
        live.with(|a| a.as_ref().is_some_and(|a| a.status == AccountStatusView::Active && a.current_balance.is_zero()))
    });
    view! {
        <section class="card commands">
            <h2>"Move money"</h2>
            {move || account_id.get().map(|account_id| view! {
                <div class="money-forms">
                    <MoneyForm kind=MoneyCommand::Deposit account_id on_accepted />
                    <MoneyForm kind=MoneyCommand::Withdraw account_id on_accepted />
                    <TransferForm account_id on_accepted=on_transfer />
                </div>
                <Show when=move || closable.get()>
                    <CloseAccount account_id on_accepted />
                </Show>
                <OperatorsOnly>
                    <FreezeControls account_id frozen on_accepted />
                </OperatorsOnly>
            }.into_any())}
        </section>
    }
}

#[component]
fn FiguresView(figures: Signal<Option<Figures>>) -> impl IntoView {
    let show = move |read: fn(&Figures) -> String| move || figures.with(|f| f.as_ref().map(read).unwrap_or_default());
    let show_time = move |read: fn(&Figures) -> OffsetDateTime| {
        move || figures.with(|f| f.as_ref().map(|f| view! { <Time at=read(f) /> }))
    };
    view! {
        <p class="balance">
            <span class="label">"Balance"</span>
            <span class="amount" data-testid="balance">{show(|f| format::viewer_money(f.balance))}</span>
        </p>
        <dl class="figures">
            <div><dt>"Total deposits"</dt><dd data-testid="total-deposits">{show(|f| format::viewer_money(f.total_deposits))}</dd></div>
            <div><dt>"Total withdrawals"</dt><dd data-testid="total-withdrawals">{show(|f| format::viewer_money(f.total_withdrawals))}</dd></div>
            <div><dt>"Transactions"</dt><dd data-testid="transaction-count">{show(|f| f.transaction_count.to_string())}</dd></div>
            <div><dt>"Last transaction"</dt><dd data-testid="last-transaction">{show_time(|f| f.last_transaction)}</dd></div>
            <div><dt>"Created"</dt><dd data-testid="created-at">{show_time(|f| f.created_at)}</dd></div>
        </dl>
    }
}

#[component]
fn AccountMissing(error: Option<ApiError>) -> impl IntoView {
    let (title, message) = match error {
        Some(error) if error.code == ErrorCode::AccountNotFound => (
            "Account not found",
            "No account has this number, or it was created a moment ago and the read model has not caught up yet."
                .to_owned(),
        ),
        Some(error) => ("The account cannot be shown", error.message),
        None => ("Loading the account…", String::new()),
    };
    view! {
        <section class="card" data-testid="account-missing">
            <h1>{title}</h1>
            <p>{message}</p>
            <p><A href="/">"Back to the accounts"</A></p>
        </section>
    }
}
