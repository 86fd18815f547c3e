//! `<Show>` for a condition read from a resource, safe to render on the server.

use leptos::children::{TypedChildrenFn, ViewFn};
use leptos::either::Either;
use leptos::prelude::*;

/// Shows `children` when `when` holds, else `fallback`, as `<Show>` does, for a condition
/// over a resource.
///
/// `<Show>` keeps its condition in a `Memo`, and a memo over a resource that is still loading
/// can miss the load's end when the server renders: its threads run at once, and
/// reactive_graph marks the memo clean after computing it, over the dirty mark the thread
/// that finished the load set meanwhile. The page was then sent with the fallback ("Loading
/// the account…", for good) beside the loaded data, and the browser, given the data, hydrated
/// the children over the fallback's nodes and panicked. So the server reads the condition
/// afresh each time; the browser (one thread) memoises it, so that the children are built
/// once, not again on every poll that changes the resource's value but not the condition.
#[component(transparent)]
pub fn ShowLoaded<W, C>(
    children: TypedChildrenFn<C>,
    when: W,
    #[prop(optional, into)] fallback: ViewFn,
) -> impl IntoView
where
    W: Fn() -> bool + Send + Sync + 'static,
    C: IntoView + 'static,
{
    let when = settled(when);
    let children = children.into_inner();
    move || if when.get() { Either::Left(children()) } else { Either::Right(fallback.run()) }
}

/// The condition as the browser memoises it.
#[cfg(feature = "hydrate")]
fn settled(when: impl Fn() -> bool + Send + Sync + 'static) -> Signal<bool> {
    Memo::new(move |_| when()).into()
}

/// The condition as the server reads it: afresh, never from a memo.
#[cfg(not(feature = "hydrate"))]
fn settled(when: impl Fn() -> bool + Send + Sync + 'static) -> Signal<bool> {
    Signal::derive(when)
}

#[cfg(all(test, feature = "ssr", not(feature = "hydrate")))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use futures::channel::oneshot;
    use hydration_context::SsrSharedContext;
    use leptos::prelude::*;

    use super::ShowLoaded;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resource_that_loads_while_its_condition_is_read_shows_the_children() {
        let _ = any_spawner::Executor::init_tokio();
        // Given a page, rendered as the server renders (out of order, on several threads),
        // whose condition reads a resource that finishes loading while it is being read:
        let owner = Owner::new_root(Some(Arc::new(SsrSharedContext::new())));
        let page = owner.with(|| {
            let (release, released) = oneshot::channel::<()>();
            let released = Mutex::new(Some(released));
            let resource = Resource::new(
                || (),
                move |()| {
                    let released = released.lock().ok().and_then(|mut released| released.take());
                    async move {
                        if let Some(released) = released {
                            let _ = released.await;
                        }
                        7_u32
                    }
                },
            );
            // (an effect that tells when the resource's subscribers have heard of the load)
            let heard = Arc::new(AtomicBool::new(false));
            Effect::new_isomorphic({
                let heard = Arc::clone(&heard);
                move |_| heard.store(resource.get().is_some(), Ordering::SeqCst)
            });
            let release = Mutex::new(Some(release));
            let loaded = move || {
                let loaded = resource.get().is_some();
                // The first read lets the load finish, on the other worker, and waits (at most
                // 30 s) until it has been announced: the window `<Show>`'s memo lost it in.
                if let Some(release) = release.lock().ok().and_then(|mut release| release.take()) {
                    let _ = release.send(());
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !heard.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                loaded
            };
            view! {
                <Transition fallback=|| "loading">
                    <ShowLoaded when=loaded fallback=|| "still loading">"loaded"</ShowLoaded>
                </Transition>
            }
        });

        // when the server renders it,
        let html = owner.with(|| page.to_html_stream_out_of_order()).collect::<String>().await;

        // then it is sent with what the loaded resource says, as the browser will hydrate it.
        assert!(html.contains("loaded") && !html.contains("still loading"), "{html}");
    }
}
