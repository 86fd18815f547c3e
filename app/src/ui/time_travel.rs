//! Picking a moment in the account's past: a version on a slider, or a date and time.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TravelTo {
    Version(i64),
    /// An RFC 3339 time, UTC.
    Moment(String),
}

#[component]
pub fn TimeTravel(
    latest_version: Signal<i64>,
    travel: RwSignal<Option<TravelTo>>,
    /// Why the last trip failed (say, a moment before the account existed).
    error: Signal<Option<String>>,
) -> impl IntoView {
    let slider = RwSignal::new(None::<i64>);
    let shown_version = move || slider.get().unwrap_or_else(|| latest_version.get());
    let moment = RwSignal::new(String::new());
    let go_to_moment = move |event: SubmitEvent| {
        event.prevent_default();
        let local = moment.get_untracked();
        if local.is_empty() {
            return;
        }
        // <input type="datetime-local"> gives "2026-11-26T14:03" or with seconds; the page shows
        // UTC, so the picked time is read as UTC.
        let with_seconds = if local.len() == 16 { format!("{local}:00") } else { local };
        slider.set(None);
        travel.set(Some(TravelTo::Moment(format!("{with_seconds}Z"))));
    };
    view! {
        <section class="card time-travel" data-testid="time-travel">
            <h2>"Time travel"</h2>
            <p class="hint">"See the account exactly as it was, folded from its events."</p>
            <label for="travel-version">"Version " <output data-testid="travel-version">{shown_version}</output>
                " of " {move || latest_version.get()}</label>
            <input
                id="travel-version"
                type="range"
                min="1"
                max=move || latest_version.get().max(1)
                prop:value=move || shown_version().to_string()
                on:change=move |event| {
                    if let Ok(version) = event_target_value(&event).parse::<i64>() {
                        slider.set(Some(version));
                        travel.set(Some(TravelTo::Version(version)));
                    }
                }
            />
            <form class="travel-moment" on:submit=go_to_moment>
                <label for="travel-moment">"Moment (UTC)"</label>
                <div class="money-form-row">
                    <input id="travel-moment" type="datetime-local" step="1" bind:value=moment />
                    <button type="submit" disabled={
                        let ready = super::hydrated();
                        move || !ready.get()
                    }>"Show then"</button>
                </div>
            </form>
            <p class="form-error" role="alert" data-testid="travel-error">{move || error.get()}</p>
            <button
                type="button"
                disabled=move || travel.with(Option::is_none)
                on:click=move |_| {
                    slider.set(None);
                    travel.set(None);
                }
            >
                "Back to now"
            </button>
        </section>
    }
}
