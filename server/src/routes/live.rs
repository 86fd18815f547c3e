//! `GET /api/live`: the read model's progress as server-sent events, so that pages refetch the
//! moment what they show has changed instead of at their next poll.
//!
//! Every instance serves its own subscribers from its own [`eventstore::change_feed::ChangeFeed`], which hears every
//! instance's batches. A client that comes back sends `Last-Event-ID` and first gets what
//! changed since (read from the store, bounded), then the feed — nothing missed, nothing twice.
//! A client too slow for the feed's buffer is told to resync and dropped, never buffered without
//! bound. Streams are capped per client and in all, and end when the server shuts down or when
//! the credentials they were opened with no longer hold (signed out, revoked, a password reset),
//! which they check whenever the user's credentials change and every half minute.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::api::{ApiError, ErrorCode};
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use backend::identity::{Caller, CallerCache, Presented};
use backend::read_side::live::Watch;
use eventstore::Position;
use eventstore::change_feed::{Changes, Next, Subscription};
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use uuid::Uuid;

use crate::startup::AppState;

/// A comment this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting a stream that ended: 2 s plus up to 3 s at
/// random, so that the browsers of a restarted server do not all come back at once.
fn reconnect_after() -> Duration {
    Duration::from_millis(2_000 + fastrand::u64(0..3_000))
}

pub async fn live(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(presented): Extension<Presented>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let watch = Watch::parse(params.get("accounts").map(String::as_str)).map_err(ApiError::invalid_request)?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|id| id.parse::<Position>().ok()).ok_or_else(|| {
            ApiError::invalid_request("Last-Event-ID: not a position this stream sent (transaction:position)")
        })?),
    };
    let ticket = state.live_streams.admit(caller.user_id)?;
    // Operators hear all they ask for; customers their own accounts only, so that a stream never
    // tells anyone that someone else's account moved.
    let owner = caller.visible_owner();
    let watch = watch.narrowed_to(owner, &state.services.read_model, &state.services.history).await?;
    let (subscription, replayed_to) = state.change_feed.subscribe(watch.streams());
    let catch_up = match resume {
        Some(after) if after < replayed_to => Some(state.change_feed.catch_up(after, replayed_to).await),
        _ => None,
    };
    // A client that has seen more than this instance has (it came from another one) is told
    // only what comes after both.
    let replayed_to = resume.map_or(replayed_to, |after| after.max(replayed_to));
    // Streams opened together (the clients of a restarted server) check at different times.
    let first_check = state.live_streams.recheck.mul_f64(0.5 + fastrand::f64());
    let credentials = Credentials {
        changes: state.services.callers.changes_of(caller.user_id),
        hearing: true,
        presented,
        user_id: caller.user_id,
        callers: state.services.callers.clone(),
        pool: state.services.pool.clone(),
        next_check: tokio::time::interval_at(tokio::time::Instant::now() + first_check, state.live_streams.recheck),
    };
    let events = messages(catch_up, subscription, replayed_to, watch, ticket)
        .take_until(credentials.ended())
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// First a `ready` event (which sets the browser's reconnection delay), then the catch-up if
/// any, then the feed's messages after `replayed_to` that concern what the subscriber watches; a
/// lagging subscriber gets `resync` and the stream ends.
fn messages(
    catch_up: Option<Changes>,
    subscription: Subscription,
    replayed_to: Position,
    watch: Watch,
    ticket: LiveTicket,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let ready = Event::default().event("ready").retry(reconnect_after()).data("{}");
    let first = std::iter::once(ready).chain(catch_up.as_ref().and_then(|changes| progress_event(&watch, changes)));
    let first: Vec<Event> = first.collect();
    let feed = futures_util::stream::unfold(
        (subscription, false, watch, ticket),
        move |(mut subscription, lagged, watch, ticket)| async move {
            if lagged {
                return None;
            }
            loop {
                match subscription.next().await {
                    Next::Changes(changes) if changes.position <= replayed_to => continue,
                    Next::Changes(changes) => match progress_event(&watch, &changes) {
                        Some(event) => return Some((event, (subscription, false, watch, ticket))),
                        None => continue,
                    },
                    Next::Lagged => {
                        tracing::info!("a live stream fell behind; its client resyncs");
                        let resync = Event::default().event("resync").data("{}");
                        return Some((resync, (subscription, true, watch, ticket)));
                    }
                    Next::Closed => return None,
                }
            }
        },
    );
    futures_util::stream::iter(first).chain(feed).map(Ok)
}

/// A feed message as a `progress` event for this subscriber, if it concerns what it watches.
fn progress_event(watch: &Watch, changes: &Changes) -> Option<Event> {
    let progress = watch.progress(changes)?;
    Some(
        Event::default()
            .event("progress")
            .id(changes.position.to_string())
            .json_data(&progress)
            .expect("live progress always serialises to JSON"),
    )
}

/// What a stream was opened with, to check again: when the user's credentials change (on any
/// instance) and every [`LiveStreams::recheck`].
struct Credentials {
    presented: Presented,
    user_id: Uuid,
    callers: CallerCache,
    pool: sqlx::PgPool,
    changes: watch::Receiver<()>,
    /// Whether `changes` still delivers.
    hearing: bool,
    next_check: tokio::time::Interval,
}

impl Credentials {
    /// Resolves once the credentials no longer name the stream's user. A check that cannot
    /// reach the database keeps the stream (and checks again later).
    async fn ended(mut self) {
        loop {
            tokio::select! {
                _ = self.next_check.tick() => {}
                changed = self.changes.changed(), if self.hearing => {
                    if changed.is_err() {
                        self.hearing = false;
                        continue;
                    }
                }
            }
            match self.callers.look_up(&self.pool, &self.presented).await {
                Ok(Some(caller)) if caller.user_id == self.user_id => {}
                Ok(_) => {
                    tracing::info!("a live stream's credentials no longer hold; closing it");
                    return;
                }
                Err(error) => tracing::warn!(%error, "cannot check a live stream's credentials; will try again"),
            }
        }
    }
}

/// The caps on concurrent live streams: per user and in all.
#[derive(Clone)]
pub struct LiveStreams {
    total: Arc<Semaphore>,
    per_client: Arc<Mutex<HashMap<Uuid, usize>>>,
    max_per_client: usize,
    /// How often a stream checks its credentials when no notification made it check.
    recheck: Duration,
}

/// A stream's place under the caps, given back when the stream ends.
pub struct LiveTicket {
    _place: OwnedSemaphorePermit,
    client: Uuid,
    per_client: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl LiveStreams {
    pub fn new(max_total: usize, max_per_client: usize, recheck: Duration) -> LiveStreams {
        LiveStreams {
            recheck,
            total: Arc::new(Semaphore::new(max_total)),
            per_client: Arc::new(Mutex::new(HashMap::new())),
            max_per_client,
        }
    }

    fn admit(&self, client: Uuid) -> Result<LiveTicket, ApiError> {
        let too_many = |what: &str| {
            ApiError::new(
                ErrorCode::TooManyRequests,
                format!("Too many live streams {what}; the page keeps polling instead, retry later"),
            )
        };
        let place = self.total.clone().try_acquire_owned().map_err(|_| too_many("on this server"))?;
        let mut per_client = self.per_client.lock().expect("live stream counts are never poisoned");
        let open = per_client.entry(client).or_default();
        if *open >= self.max_per_client {
            return Err(too_many("from this client"));
        }
        *open += 1;
        Ok(LiveTicket { _place: place, client, per_client: self.per_client.clone() })
    }
}

impl Drop for LiveTicket {
    fn drop(&mut self) {
        let mut per_client = self.per_client.lock().expect("live stream counts are never poisoned");
        if let Some(open) = per_client.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}
