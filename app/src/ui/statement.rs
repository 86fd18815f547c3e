//! Statements: the account page's form asking for one, and the printable page that shows it
//! (the CSV comes from the server's `…/statement.csv` route).

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};
use time::OffsetDateTime;
use uuid::Uuid;

use super::format::{self, Money};
use crate::api::ApiError;
use crate::api::queries::account_statement;
use bank::contract::Statement;
use bank::domain::CURRENCY;

/// Asks for a statement of the days chosen: a printable page, or a CSV file. A plain form (it
/// works before the page is interactive, and the browser downloads the file), first showing the
/// month of the account's latest movement.
#[component]
pub fn StatementForm(account_id: Uuid, last_movement: OffsetDateTime) -> impl IntoView {
    let to = last_movement.date();
    let from = to.replace_day(1).unwrap_or(to);
    view! {
        <section class="card statement-form" data-testid="statement-form">
            <h2>"Statement"</h2>
            <form method="get" action=format!("/accounts/{account_id}/statement")>
                <label>"From " <input type="date" name="from" required value=from.to_string() /></label>
                <label>"to " <input type="date" name="to" required value=to.to_string() /></label>
                <button type="submit">"Show statement"</button>
                <button type="submit" formaction=format!("/api/queries/accounts/{account_id}/statement.csv")>
                    "Download CSV"
                </button>
            </form>
            <p class="hint">"Days in UTC, at most 366 of them; from the ledger read model."</p>
        </section>
    }
}

/// `/accounts/:id/statement?from=YYYY-MM-DD&to=YYYY-MM-DD`: the statement, laid out to print.
#[component]
pub fn StatementPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let request = move || {
        let account_id = params.read().get("id").and_then(|id| Uuid::parse_str(&id).ok());
        let query = query.read();
        (account_id, query.get("from").unwrap_or_default(), query.get("to").unwrap_or_default())
    };
    let statement = Resource::new(request, |(account_id, from, to)| async move {
        match account_id {
            Some(account_id) => account_statement(account_id, from, to, None).await,
            None => Err(ApiError::invalid_request("no account")),
        }
    });
    view! {
        <p class="breadcrumbs no-print">
            {move || request().0.map(|id| view! { <A href=format!("/accounts/{id}")>"← The account"</A> })}
        </p>
        <Transition fallback=|| view! { <p class="loading">"Loading the statement…"</p> }>
            {move || statement.get().map(|statement| match statement {
                Ok(statement) => view! { <StatementView statement /> }.into_any(),
                Err(error) => view! {
                    <section class="card" data-testid="statement-error">
                        <h2>"No statement"</h2>
                        <p class="error" role="alert">{error.message}</p>
                    </section>
                }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn StatementView(statement: Statement) -> impl IntoView {
    let (from, to) = (statement.period.from.to_string(), statement.period.to.to_string());
    let csv = format!("/api/queries/accounts/{}/statement.csv?from={from}&to={to}", statement.account_id);
    view! {
        <section class="card statement" data-testid="statement">
            <h1>"Statement"</h1>
            <p>
                "Account " <code>{statement.account_id.to_string()}</code>
                ", " {from.clone()} " to " {to.clone()} " (UTC)"
            </p>
            <p class="no-print">
                <button type="button" on:click=|_| print()>"Print"</button>
                " " <a href=csv download>"Download CSV"</a>
            </p>
            <div class="table-scroll" tabindex="0">
                <table class="statement-lines">
                    <thead>
                        <tr>
                            <th scope="col">"Date"</th>
                            <th scope="col">"Description"</th>
                            <th scope="col" class="numeric">"Amount"</th>
                            <th scope="col" class="numeric">"Balance"</th>
                        </tr>
                    </thead>
                    <tbody>
                        <tr class="opening">
                            <td>{from}</td>
                            <th scope="row">"Opening balance"</th>
                            <td></td>
                            <td class="numeric" data-testid="opening-balance"><Money value={statement.opening_balance} /></td>
                        </tr>
                        {statement.entries.iter().map(|entry| view! {
                            <tr>
                                // In UTC, as the period is: a statement's days are UTC days.
                                <td>{format::time(entry.recorded_at)}</td>
                                <td>{entry.kind.in_words()}</td>
                                <td class="numeric"><Money value={entry.signed_amount()} /></td>
                                <td class="numeric"><Money value={entry.balance_after} /></td>
                            </tr>
                        }).collect_view()}
                        <tr class="closing">
                            <td>{to}</td>
                            <th scope="row">"Closing balance"</th>
                            <td></td>
                            <td class="numeric" data-testid="closing-balance"><Money value={statement.closing_balance} /></td>
                        </tr>
                    </tbody>
                </table>
            </div>
            <p class="hint">
                {format!("{} movements, from the ledger read model. Amounts in {CURRENCY}.", statement.entries.len())}
            </p>
        </section>
    }
}

/// The browser's print dialog.
fn print() {
    #[cfg(feature = "hydrate")]
    if let Err(error) = window().print() {
        leptos::logging::warn!("printing failed: {error:?}");
    }
}
