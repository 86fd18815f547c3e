//! Eventual consistency, made visible.

use eventstore::Position;
use leptos::prelude::*;

use bank::contract::ServedBy;

/// "synced as of #…" once the read model has passed the user's last command (`token`),
/// "syncing…" until then; how the page learns of changes: "live" or "polling"; and which read
/// store the figures came from.
#[component]
pub fn SyncBadge(
    /// The read model's position the page shows.
    as_of: Signal<Option<Position>>,
    /// The user's last command's position, if any.
    token: Signal<Option<Position>>,
    /// Whether the live stream is up (else the page polls).
    live: Signal<bool>,
    /// The read store that answered, if known.
    #[prop(optional, into)]
    served_by: Signal<Option<ServedBy>>,
) -> impl IntoView {
    let syncing = move || matches!((as_of.get(), token.get()), (Some(as_of), Some(token)) if as_of < token);
    view! {
        <p class="sync-badge" class:syncing=syncing data-testid="sync-badge" role="status" aria-live="polite">
            <span class="dot" aria-hidden="true"></span>
            {move || if syncing() { "syncing…" } else { "synced" }}
            <span class="as-of">{move || as_of.get().map(|p| format!(" as of #{p}")).unwrap_or_default()}</span>
            <span class="mode" class:live=live data-testid="sync-mode"
                title=move || if live.get() { "the server pushes every change" } else { "asking the server every 2 s" }>
                {move || if live.get() { "live" } else { "polling" }}
            </span>
            {move || served_by.get().map(|store| view! {
                <span class="store" data-testid="read-store"
                    title="both read stores hold the same read model, each as of its own position">
                    {format!("from {}", store.label())}
                </span>
            })}
        </p>
    }
}
