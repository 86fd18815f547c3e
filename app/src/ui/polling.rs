use leptos::prelude::*;
use leptos::web_sys::VisibilityState;
use leptos_use_document_visibility::use_document_visibility;
use leptos_use_interval_fn::{Pausable, use_interval_fn};

/// How often the pages ask the read model again.
pub const POLL_MILLIS: u64 = 2000;

/// Calls `tick` every [`POLL_MILLIS`] in the browser while the tab is visible — a hidden tab
/// costs the server nothing — and once at once when the tab is shown again. Nothing runs while
/// the server renders the page.
pub fn poll_while_visible(tick: impl Fn() + Clone + Send + Sync + 'static) {
    let Pausable { pause, resume, .. } = use_interval_fn(tick.clone(), POLL_MILLIS);
    let visibility = use_document_visibility();
    Effect::new(move |was_visible: Option<bool>| {
        let visible = visibility.get() == VisibilityState::Visible;
        match (was_visible, visible) {
            (Some(false), true) => {
                tick();
                resume();
            }
            (_, false) => pause(),
            _ => {}
        }
        visible
    });
}
