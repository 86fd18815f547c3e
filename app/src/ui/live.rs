//! The live stream in the browser: one `EventSource` on `/api/live` per tab, shared by the
//! pages through context. While it is up, pages refetch exactly what a message concerns and do
//! not poll; while it is down (the server restarting, a proxy in the way, the stream refused)
//! they poll as before. On every (re)connection the pages refetch what they show once, which
//! covers whatever changed while the stream was down.

use leptos::prelude::*;

use crate::contract::LiveProgress;

/// What the stream says, as signals.
#[derive(Clone, Copy)]
pub struct Live {
    /// Whether the stream is up.
    pub connected: RwSignal<bool>,
    /// The latest message: what changed, or (`everything`) "refetch what you show".
    pub latest: RwSignal<Option<LiveProgress>>,
}

impl Live {
    /// Runs `refetch` in the browser whenever a message arrives that `concerns` says the page
    /// shows. Nothing runs while the server renders the page.
    pub fn on_change(self, concerns: impl Fn(&LiveProgress) -> bool + 'static, refetch: impl Fn() + 'static) {
        Effect::new(move |_| {
            if self.latest.with(|latest| latest.as_ref().is_some_and(&concerns)) {
                refetch();
            }
        });
    }
}

/// Provides [`Live`] to the pages and, in the browser, opens the stream.
pub fn provide_live() -> Live {
    let live = Live { connected: RwSignal::new(false), latest: RwSignal::new(None) };
    provide_context(live);
    // An effect runs only in the browser, once hydrated.
    Effect::new(move |_| browser::connect(live));
    live
}

pub fn use_live() -> Live {
    expect_context::<Live>()
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::time::Duration;

    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    use web_sys::{EventSource, MessageEvent};

    use super::Live;
    use crate::contract::LiveProgress;

    /// How long to wait before opening a stream again that the server refused or closed for good
    /// (the browser itself reconnects after a dropped connection).
    const REOPEN_AFTER: Duration = Duration::from_secs(5);

    pub fn connect(live: Live) {
        let Ok(source) = EventSource::new("/api/live") else {
            return;
        };
        listen(&source, "ready", move |_| {
            live.connected.set(true);
            live.latest.set(Some(LiveProgress::everything()));
        });
        listen(&source, "progress", move |event| {
            match event.data().as_string().map(|data| serde_json::from_str::<LiveProgress>(&data)) {
                Some(Ok(progress)) => live.latest.set(Some(progress)),
                _ => live.latest.set(Some(LiveProgress::everything())),
            }
        });
        // Fell behind the server's buffer: what was missed is unknown, so refetch everything;
        // the stream ends and the browser opens it again.
        listen(&source, "resync", move |_| live.latest.set(Some(LiveProgress::everything())));
        let on_error = {
            let source = source.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                live.connected.set(false);
                if source.ready_state() == EventSource::CLOSED {
                    set_timeout(move || connect(live), REOPEN_AFTER);
                }
            })
        };
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        // The listeners live as long as their stream, which lives as long as the tab (or until
        // it is closed for good and replaced, a few times at most per outage).
        on_error.forget();
    }

    fn listen(source: &EventSource, event: &str, handle: impl FnMut(MessageEvent) + 'static) {
        let handler = Closure::<dyn FnMut(MessageEvent)>::new(handle);
        let _ = source.add_event_listener_with_callback(event, handler.as_ref().unchecked_ref());
        handler.forget();
    }
}

#[cfg(not(feature = "hydrate"))]
mod browser {
    use super::Live;

    /// On the server there is no stream to open.
    pub fn connect(_: Live) {}
}
