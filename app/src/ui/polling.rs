use leptos::prelude::*;
use leptos::web_sys::VisibilityState;
use leptos_use_document_visibility::use_document_visibility;
use leptos_use_interval_fn::{Pausable, use_interval_fn};

use super::live::use_live;

/// How often the pages ask the read model again while the live stream is down.
pub const POLL_MILLIS: u64 = 2000;

/// Calls `tick` every [`POLL_MILLIS`] in the browser while the tab is visible and the live
/// stream is down — a hidden tab costs the server nothing, and while the stream is up it tells
/// the page when to read — and once at once when the tab is shown again. Nothing runs while the
/// server renders the page.
pub fn poll_while_visible(tick: impl Fn() + Clone + Send + Sync + 'static) {
    let Pausable { pause, resume, .. } = use_interval_fn(tick.clone(), POLL_MILLIS);
    let visibility = use_document_visibility();
    let live = use_live();
    Effect::new(move |was_visible: Option<bool>| {
        let visible = visibility.get() == VisibilityState::Visible;
        if was_visible == Some(false) && visible {
            tick();
        }
        if visible && !live.connected.get() {
            resume();
        } else {
            pause();
        }
        visible
    });
}
