//! The read side at work: every projection's status, live, and the operator's levers; and
//! personal data: whether it is sealed, and forgetting a customer.

use eventstore::{LeverPulled, Position, ProjectionState, ProjectionStatus};
use leptos::prelude::*;

use super::confirm::ConfirmButton;
use super::format::{self, Time};
use super::live::use_live;
use super::polling::poll_status_while_visible;
use crate::api::ApiError;
use crate::api::operations::{
    list_projections, rebuild_projection, recent_levers, replica_status, retry_projection, skip_failed_event,
};
use crate::api::privacy::{forget_user, personal_data};
use bank::contract::PersonalDataStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lever {
    Retry,
    /// Skips the failing event shown, and only that one.
    Skip(Position),
    Rebuild,
}

#[component]
pub fn OperationsPage() -> impl IntoView {
    let projections = Resource::new(|| (), |_| list_projections());
    let replica = Resource::new(|| (), |_| replica_status());
    poll_status_while_visible(move || {
        projections.refetch();
        replica.refetch();
    });
    use_live().on_change(|_| true, move || projections.refetch());
    let levers = Resource::new(|| (), |_| recent_levers());
    // Every lever is pulled with a reason, recorded with it (and shown below).
    let reason = RwSignal::new(String::new());
    let pull = Action::new(move |(lever, name): &(Lever, String)| {
        let (lever, name, reason) = (*lever, name.clone(), reason.get_untracked());
        async move {
            let done: Result<(), ApiError> = match lever {
                Lever::Retry => retry_projection(name, reason).await,
                Lever::Skip(position) => skip_failed_event(name, position, reason).await,
                Lever::Rebuild => rebuild_projection(name, reason).await,
            };
            projections.refetch();
            levers.refetch();
            done
        }
    });
    let oldest = move || {
        projections.get().and_then(Result::ok).and_then(|all| all.first().map(|p| p.oldest_transaction_seconds)).map(
            |seconds| format!("Oldest open transaction in the cluster: {seconds:.1} s (every projection waits for it)"),
        )
    };
    view! {
        <section class="card operations">
            <h1>"Projections"</h1>
            <p class="hint">
                "Each read model follows the event store from its own checkpoint, run by one server instance at a time. "
                "Refreshed every 2 s."
            </p>
            <label for="lever-reason">"Reason for the next lever (recorded with it)"</label>
            <input id="lever-reason" type="text" autocomplete="off" bind:value=reason
                placeholder="e.g. deployed the fix for the ledger's decimal bug" />
            <Transition fallback=|| view! { <p class="loading">"Loading the projections…"</p> }>
                <div class="projections" data-testid="projections">
                    {move || projections.get().map(|result| match result {
                        Ok(all) => all.into_iter().map(|p| view! { <ProjectionCard status=p pull /> }).collect_view().into_any(),
                        Err(error) => view! { <p class="form-error" role="alert">{error.message}</p> }.into_any(),
                    })}
                </div>
                // Inside the transition: read outside it, the server would render it before the
                // projections are loaded and the browser after, and hydration would not match.
                <p class="hint">{oldest}</p>
            </Transition>
            <Transition fallback=|| ()>
                <p class="hint" data-testid="replica">{move || replica.get().and_then(Result::ok).map(replica_line)}</p>
            </Transition>
            <p class="form-error" role="alert" data-testid="operations-error">
                {move || pull.value().get().and_then(Result::err).map(|e| e.message)}
            </p>
            <h2>"Levers pulled"</h2>
            <Transition fallback=|| ()>
                {move || levers.get().and_then(Result::ok).map(|pulled| if pulled.is_empty() {
                    view! { <p class="empty">"None yet."</p> }.into_any()
                } else {
                    view! { <LeversTable pulled /> }.into_any()
                })}
            </Transition>
        </section>
        <PersonalData />
    }
}

/// Personal data: sealed or in clear, how many keys (and how many a previous master key still
/// wraps), how many people were forgotten; and the lever that forgets a customer.
#[component]
fn PersonalData() -> impl IntoView {
    let status = Resource::new(|| (), |_| personal_data());
    let username = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let forget = Action::new(move |(username, reason): &(String, String)| {
        let (username, reason) = (username.clone(), reason.clone());
        async move {
            let result = forget_user(username.clone(), reason).await.map(|done| (username, done.accounts.len()));
            status.refetch();
            result
        }
    });
    let pending = forget.pending();
    Effect::new(move |_| {
        if let Some(Ok(_)) = forget.value().get() {
            username.set(String::new());
            reason.set(String::new());
        }
    });
    let ready = super::hydrated();
    let outcome = move || {
        forget.value().get().map(|result| match result {
            Ok((who, accounts)) => view! {
                <p class="notice" role="status" data-testid="forget-user-done">
                    {format!(
                        "{who} is forgotten: {accounts} account{} now owned by {}.",
                        if accounts == 1 { "" } else { "s" },
                        bank::domain::FORGOTTEN,
                    )}
                </p>
            }
            .into_any(),
            Err(error) => view! { <p class="form-error" role="alert">{error.message}</p> }.into_any(),
        })
    };
    view! {
        <section class="card personal-data" data-testid="personal-data">
            <h2>"Personal data"</h2>
            <Transition fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || status.get().map(|result| match result {
                    Ok(status) => view! { <PersonalDataFigures status /> }.into_any(),
                    Err(error) => view! { <p class="form-error" role="alert">{error.message}</p> }.into_any(),
                })}
            </Transition>
            <form data-testid="forget-user-form" on:submit=|event: leptos::ev::SubmitEvent| event.prevent_default()>
                <h3>"Forget a customer"</h3>
                <p class="hint">
                    "Their accounts must be closed. Their name and words are erased for good; their accounts' "
                    "money history stays. The reason is recorded."
                </p>
                <label for="forget-username">"Customer's username"</label>
                <input id="forget-username" type="text" autocomplete="off" required bind:value=username />
                <label for="forget-reason">"Why they are forgotten (recorded)"</label>
                <input id="forget-reason" type="text" autocomplete="off" required bind:value=reason
                    placeholder="e.g. their written request of 3 March" />
                <ConfirmButton
                    label="Forget customer"
                    question="Forget this customer for good? It cannot be undone.".to_owned()
                    confirm="Yes, forget them"
                    class="danger"
                    disabled=Signal::derive(move || !ready.get() || pending.get())
                    on_confirm=Callback::new(move |()| {
                        if !pending.get_untracked() {
                            forget.dispatch((username.get_untracked(), reason.get_untracked()));
                        }
                    })
                />
                {outcome}
            </form>
        </section>
    }
}

#[component]
fn PersonalDataFigures(status: PersonalDataStatus) -> impl IntoView {
    view! {
        <p data-testid="sealed" data-sealed=status.sealed.to_string()>
            {if status.sealed {
                "Personal data is sealed with a key per person."
            } else {
                "No master key: personal data is stored in clear (nobody can be forgotten)."
            }}
        </p>
        <dl class="figures">
            <div><dt>"Keys"</dt><dd data-testid="personal-keys">{format::count(status.keys)}</dd></div>
            {(status.keys_under_other_master_keys > 0).then(|| view! {
                <div>
                    <dt>"Under another master key"</dt>
                    <dd data-testid="keys-under-other">{format::count(status.keys_under_other_master_keys)}</dd>
                </div>
            })}
            <div><dt>"People forgotten"</dt><dd data-testid="people-forgotten">{format::count(status.forgotten)}</dd></div>
        </dl>
    }
}

/// The levers operators pulled, newest first, each with who pulled it and why.
#[component]
fn LeversTable(pulled: Vec<LeverPulled>) -> impl IntoView {
    view! {
        <table class="events" data-testid="levers">
            <thead><tr>
                <th scope="col">"When"</th>
                <th scope="col">"Projection"</th>
                <th scope="col">"Lever"</th>
                <th scope="col">"By"</th>
                <th scope="col">"Reason"</th>
            </tr></thead>
            <tbody>
                {pulled.into_iter().map(|lever| view! {
                    <tr>
                        <td><Time at={lever.pulled_at} /></td>
                        <td>{lever.projection_name}</td>
                        <td>{lever.lever}{lever.position.map(|p| format!(" #{p}"))}</td>
                        <td>{lever.operator}</td>
                        <td>{lever.reason}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn ProjectionCard(status: ProjectionStatus, pull: Action<(Lever, String), Result<(), ApiError>>) -> impl IntoView {
    let name = status.name.clone();
    let lever = move |which: Lever| {
        let name = name.clone();
        move |_| {
            pull.dispatch((which, name.clone()));
        }
    };
    // A failure can outlast a rebuild: the live tables stay stopped at the event meanwhile.
    let failed_at = status.failed_position;
    let failed = failed_at.is_some();
    let rebuilding = status.state == ProjectionState::Rebuilding;
    let pending = pull.pending();
    let skip = {
        let name = status.name.clone();
        move || {
            pull.dispatch((Lever::Skip(failed_at.unwrap_or_default()), name.clone()));
        }
    };
    view! {
        <article class="projection" data-testid=format!("projection-{}", status.name) data-state=status.summary.clone()>
            <header>
                <h2>{status.name.clone()}</h2>
                <span class=format!("state {}", status.summary.replace(' ', "-"))>{status.summary.clone()}</span>
            </header>
            <dl class="figures">
                <div><dt>"Checkpoint"</dt><dd>{format!("#{}", status.checkpoint)}</dd></div>
                <div><dt>"Head"</dt><dd>{format!("#{}", status.head)}</dd></div>
                <div><dt>"Lag"</dt><dd data-testid="lag-events">{format!("{} · {:.1} s", format::events(status.lag_events), status.lag_seconds)}</dd></div>
                <div><dt>"Applied"</dt><dd>{format::count(status.events_applied)}</dd></div>
                <div><dt>"Run by"</dt><dd>{status.owner_instance.clone().unwrap_or_else(|| "no instance".to_owned())}</dd></div>
            </dl>
            {status.rebuild.map(|progress| view! {
                <label class="progress">
                    {format!("Rebuilding: {} of {} events", progress.done, progress.total)}
                    <progress max=progress.total.max(1) value=progress.done data-testid="rebuild-progress"></progress>
                </label>
            })}
            {status.rebuild_reason.clone().map(|why| view! {
                <p class="rebuild-reason" data-testid="rebuild-reason">{format!("Rebuilt by itself: {why}")}</p>
            })}
            {status.last_error.clone().map(|error| view! {
                <p class="form-error" data-testid="projection-error">{error}</p>
            })}
            <div class="levers">
                // The API can rebuild a failed projection too (up to its failure), but the page
                // asks the operator to deal with the failure first.
                <button type="button" disabled=move || failed || rebuilding || pending.get() on:click=lever(Lever::Rebuild)>
                    "Rebuild"
                </button>
                <button type="button" disabled=move || !failed || pending.get() on:click=lever(Lever::Retry)>"Retry"</button>
                <ConfirmButton
                    label="Skip failing event"
                    question=format!(
                        "Skip the event at #{} for good? This projection will never apply it.",
                        failed_at.unwrap_or_default()
                    )
                    confirm="Yes, skip it"
                    class="danger"
                    disabled=Signal::derive(move || !failed || pending.get())
                    on_confirm=Callback::new(move |()| skip())
                />
            </div>
        </article>
    }
}

/// Where queries read, in one line: the replica and its lag, or the primary and why.
fn replica_line(replica: Option<bank::contract::ReplicaStatus>) -> String {
    let Some(replica) = replica else {
        return "Queries read the primary (no replica configured: DATABASE_READ_URL).".to_owned();
    };
    let lag = match (replica.lag_bytes, replica.lag_seconds) {
        (Some(bytes), Some(seconds)) => format!("{bytes} bytes, {seconds:.1} s behind the primary"),
        _ => "lag unknown".to_owned(),
    };
    match (replica.serving, replica.problem) {
        (true, _) => format!("Queries read the replica: {lag}."),
        (false, problem) => format!(
            "Queries read the primary: the replica {} ({lag}).",
            problem.unwrap_or_else(|| "does not serve".to_owned())
        ),
    }
}
