use leptos::prelude::*;
use leptos::web_sys::VisibilityState;
use leptos_use_document_visibility::use_document_visibility;
use leptos_use_interval_fn::{Pausable, use_interval_fn};

use super::live::use_live;

/// How often the pages ask the server again.
pub const POLL_MILLIS: u64 = 2000;

/// For what the read model's stream reports (accounts): calls `tick` every [`POLL_MILLIS`] in the
/// browser while the tab is visible and the live stream is down — a hidden tab costs the server
/// nothing, and while the stream is up it says when to read — and once at once when the tab is
/// shown again. Nothing runs while the server renders the page.
pub fn poll_while_visible(tick: impl Fn() + Clone + Send + Sync + 'static) {
    poll(tick, true);
}

/// For what the stream does not report (the projections' status: a failed or lagging projection
/// moves no checkpoint): like [`poll_while_visible`], live or not.
pub fn poll_status_while_visible(tick: impl Fn() + Clone + Send + Sync + 'static) {
    poll(tick, false);
}

fn poll(tick: impl Fn() + Clone + Send + Sync + 'static, not_while_live: bool) {
    let Pausable { pause, resume, .. } = use_interval_fn(tick.clone(), POLL_MILLIS);
    let visibility = use_document_visibility();
    let live = use_live();
    Effect::new(move |was_visible: Option<bool>| {
        let visible = visibility.get() == VisibilityState::Visible;
        if was_visible == Some(false) && visible {
            tick();
        }
        if visible && !(not_while_live && live.connected.get()) {
            resume();
        } else {
            pause();
        }
        visible
    });
}
