//! Eventual consistency, made visible.

use eventstore::Position;
use leptos::prelude::*;

/// "synced as of #…" once the read model has passed the user's last command (`token`),
/// "syncing…" until then; and how the page learns of changes: "live" or "polling".
#[component]
pub fn SyncBadge(
    /// The read model's position the page shows.
    as_of: Signal<Option<Position>>,
    /// The user's last command's position, if any.
    token: Signal<Option<Position>>,
    /// Whether the live stream is up (else the page polls).
    live: Signal<bool>,
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
        </p>
    }
}
