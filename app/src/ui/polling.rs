use std::time::Duration;

use leptos::prelude::*;

/// Calls `tick` every `period` while the component lives, in the browser only: effects do not
/// run during server rendering, so the server never polls itself.
pub fn poll_every(period: Duration, tick: impl Fn() + Clone + 'static) {
    Effect::new(move |_| {
        let tick = tick.clone();
        let handle = set_interval_with_handle(move || tick(), period).ok();
        on_cleanup(move || {
            if let Some(handle) = handle {
                handle.clear();
            }
        });
    });
}
