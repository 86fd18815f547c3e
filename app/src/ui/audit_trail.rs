//! The account's events, newest first, a page at a time, with their metadata.

use leptos::prelude::*;
use leptos_router::components::A;
use uuid::Uuid;

use super::format::{Money, Time};
use crate::api::queries::account_history;
use crate::api::{ApiError, HistoryPage};

const PAGE_SIZE: i64 = 10;

/// The pages the user has visited, as their `beforeVersion` (None: the newest page).
pub type VisitedPages = RwSignal<Vec<Option<i64>>>;

/// The page of the audit trail the user is on, for the account page to create with its other
/// resources (resources made at the top of a page hydrate in the order the server made them).
pub fn audit_page(account_id: Memo<Option<Uuid>>, pages: VisitedPages) -> Resource<Result<HistoryPage, ApiError>> {
    Resource::new(
        move || (account_id.get(), pages.with(|p| *p.last().unwrap_or(&None))),
        |(account_id, before)| async move {
            match account_id {
                Some(account_id) => account_history(account_id, before, Some(PAGE_SIZE)).await,
                None => Err(ApiError::invalid_request("no account")),
            }
        },
    )
}

#[component]
pub fn AuditTrail(page: Resource<Result<HistoryPage, ApiError>>, pages: VisitedPages) -> impl IntoView {
    let short = |id: Option<Uuid>| id.map(|id| id.to_string()[..8].to_owned()).unwrap_or_default();
    let full = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    view! {
        <section class="card audit" data-testid="audit-trail">
            <h2>"Audit trail"</h2>
            <p class="hint">"Every event of the account, as stored: the event store is the record."</p>
            <div class="table-scroll" tabindex="0">
                <table class="events">
                    <thead>
                        <tr>
                            <th scope="col" class="numeric">"#"</th>
                            <th scope="col">"Event"</th>
                            <th scope="col" class="numeric">"Amount"</th>
                            <th scope="col" class="numeric">"Balance after"</th>
                            <th scope="col">"Recorded"</th>
                            <th scope="col">"By"</th>
                            <th scope="col">"Command"</th>
                            <th scope="col">"Correlation"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || page.get().and_then(Result::ok).map(|page| page.entries.into_iter().map(|entry| view! {
                            <tr>
                                <td class="numeric">{entry.version}</td>
                                <td>
                                    {entry.event_type}
                                    {entry.counterparty_account_id.map(|other| view! {
                                        " " <A href=format!("/accounts/{other}") attr:title="the transfer's other side">
                                            <code>{format!("↔ {}", &other.to_string()[..8])}</code>
                                        </A>
                                    })}
                                    {entry.reason.map(|reason| view! { <span class="reason">{format!(" ({reason})")}</span> })}
                                </td>
                                <td class="numeric"><Money value={entry.amount} /></td>
                                <td class="numeric"><Money value={entry.balance_after} /></td>
                                <td><Time at={entry.recorded_at} /></td>
                                <td data-testid="actor">{entry.actor.clone().unwrap_or_else(|| "—".to_owned())}</td>
                                <td><code title=full(entry.command_id)>{short(entry.command_id)}</code></td>
                                <td><code title=full(entry.correlation_id)>{short(entry.correlation_id)}</code></td>
                            </tr>
                        }).collect_view())}
                    </tbody>
                </table>
            </div>
            <p class="form-error" role="alert">{move || page.get().and_then(Result::err).map(|e| e.message)}</p>
            <div class="pager">
                <button
                    type="button"
                    disabled=move || pages.with(|p| p.len() <= 1)
                    on:click=move |_| pages.update(|p| { p.pop(); })
                >
                    "← Newer"
                </button>
                <button
                    type="button"
                    disabled=move || page.get().and_then(Result::ok).is_none_or(|p| p.next_before_version.is_none())
                    on:click=move |_| {
                        if let Some(next) = page.get_untracked().and_then(Result::ok).and_then(|p| p.next_before_version) {
                            pages.update(|p| p.push(Some(next)));
                        }
                    }
                >
                    "Older →"
                </button>
            </div>
        </section>
    }
}
