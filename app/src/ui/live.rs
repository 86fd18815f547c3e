//! The live stream in the browser: one `EventSource` on `/api/live` per tab, shared by the
//! pages through context. While it is up, pages refetch exactly what a message concerns and do
//! not poll; while it is down (the server restarting, a proxy in the way, the stream refused)
//! they poll as before. On every (re)connection the pages refetch what they show once, which
//! covers whatever changed while the stream was down.

use leptos::prelude::*;

use bank::contract::LiveProgress;

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
    /// A hidden tab does not refetch: it reads again when it is shown.
    pub fn on_change(self, concerns: impl Fn(&LiveProgress) -> bool + 'static, refetch: impl Fn() + 'static) {
        self.on_change_with(concerns, move |_| refetch());
    }

    /// [`Self::on_change`], with the message that asks for it (its position, to read at or
    /// past it).
    pub fn on_change_with(
        self,
        concerns: impl Fn(&LiveProgress) -> bool + 'static,
        refetch: impl Fn(&LiveProgress) + 'static,
    ) {
        Effect::new(move |_| {
            let concerned = self.latest.with(|latest| latest.clone().filter(|latest| concerns(latest)));
            if let Some(progress) = concerned
                && document().visibility_state() == leptos::web_sys::VisibilityState::Visible
            {
                refetch(&progress);
            }
        });
    }
}

/// Provides [`Live`] to the pages; [`LiveConnection`] opens the stream.
pub fn provide_live() -> Live {
    let live = Live { connected: RwSignal::new(false), latest: RwSignal::new(None) };
    provide_context(live);
    live
}

/// Keeps the tab's stream open, watching what the page shows: an account page its account (so
/// that it hears nothing of the others), every other page every account. Inside the router, to
/// know the page; renders nothing.
#[component]
pub fn LiveConnection() -> impl IntoView {
    let live = use_live();
    let location = leptos_router::hooks::use_location();
    // An effect runs only in the browser, once hydrated.
    Effect::new(move |_| {
        if let Some(url) = stream_url(&location.pathname.get()) {
            browser::watch(live, url);
        }
    });
}

/// `None` on the pages of signed-out visitors, who have no stream (signing in loads the page
/// anew).
fn stream_url(path: &str) -> Option<String> {
    if matches!(path, "/sign-in" | "/sign-up") {
        return None;
    }
    Some(match path.strip_prefix("/accounts/").and_then(|id| uuid::Uuid::parse_str(id).ok()) {
        Some(account) => format!("/api/live?accounts={account}"),
        None => "/api/live".to_owned(),
    })
}

pub fn use_live() -> Live {
    expect_context::<Live>()
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::RefCell;
    use std::time::Duration;

    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    use web_sys::{EventSource, MessageEvent};

    use super::Live;
    use bank::contract::LiveProgress;

    /// How long to wait before opening a stream again that the server refused (429) or closed
    /// for good, doubling up to [`MAX_REOPEN_AFTER`] while it keeps failing (the browser itself
    /// reconnects after a dropped connection, at the delay the server asked for).
    const FIRST_REOPEN_AFTER: Duration = Duration::from_secs(5);
    const MAX_REOPEN_AFTER: Duration = Duration::from_secs(60);

    /// The tab's one stream and its listeners, kept as long as the stream and dropped with it.
    struct Stream {
        url: String,
        source: EventSource,
        _listeners: Vec<Closure<dyn FnMut(MessageEvent)>>,
        _on_error: Closure<dyn FnMut(web_sys::Event)>,
    }

    thread_local! {
        static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
        /// The stream the page wants, which a stream opened again after a failure follows.
        static WANTED: RefCell<String> = const { RefCell::new(String::new()) };
    }

    /// Opens the stream at `url` unless it is open there already.
    pub fn watch(live: Live, url: String) {
        WANTED.with(|wanted| wanted.replace(url.clone()));
        let open_there = STREAM.with(|stream| {
            stream
                .borrow()
                .as_ref()
                .is_some_and(|stream| stream.url == url && stream.source.ready_state() != EventSource::CLOSED)
        });
        if !open_there {
            open(live, url, FIRST_REOPEN_AFTER);
        }
    }

    fn open(live: Live, url: String, reopen_after: Duration) {
        let Ok(source) = EventSource::new(&url) else {
            return;
        };
        live.connected.set(false);
        let listeners = vec![
            listen(&source, "ready", move |_| {
                live.connected.set(true);
                live.latest.set(Some(LiveProgress::everything()));
            }),
            listen(&source, "progress", move |event| {
                match event.data().as_string().map(|data| serde_json::from_str::<LiveProgress>(&data)) {
                    Some(Ok(progress)) => live.latest.set(Some(progress)),
                    _ => live.latest.set(Some(LiveProgress::everything())),
                }
            }),
            // Fell behind the server's buffer: what was missed is unknown, so refetch
            // everything; the stream ends and the browser opens it again.
            listen(&source, "resync", move |_| live.latest.set(Some(LiveProgress::everything()))),
        ];
        let on_error = {
            let source = source.clone();
            let opened_at = js_sys::Date::now();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                live.connected.set(false);
                if source.ready_state() == EventSource::CLOSED {
                    // A stream that was up for a while starts the back-off afresh.
                    let failing_fast = js_sys::Date::now() - opened_at < MAX_REOPEN_AFTER.as_millis() as f64;
                    let next = if failing_fast { (reopen_after * 2).min(MAX_REOPEN_AFTER) } else { FIRST_REOPEN_AFTER };
                    // Replaced from a timeout, not from inside this listener, which the
                    // replacement drops.
                    // Only if this is still the tab's stream: a page change may have opened
                    // another meanwhile.
                    let failed = source.clone();
                    set_timeout(
                        move || {
                            let current =
                                STREAM.with(|stream| stream.borrow().as_ref().is_some_and(|s| s.source == failed));
                            if current {
                                open(live, WANTED.with(|wanted| wanted.borrow().clone()), next);
                            }
                        },
                        reopen_after,
                    );
                }
            })
        };
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let stream = Stream { url, source, _listeners: listeners, _on_error: on_error };
        if let Some(previous) = STREAM.with(|current| current.replace(Some(stream))) {
            previous.source.close();
        }
    }

    fn listen(
        source: &EventSource,
        event: &str,
        handle: impl FnMut(MessageEvent) + 'static,
    ) -> Closure<dyn FnMut(MessageEvent)> {
        let handler = Closure::<dyn FnMut(MessageEvent)>::new(handle);
        let _ = source.add_event_listener_with_callback(event, handler.as_ref().unchecked_ref());
        handler
    }
}

#[cfg(not(feature = "hydrate"))]
mod browser {
    use super::Live;

    /// On the server there is no stream to open.
    pub fn watch(_: Live, _: String) {}
}
