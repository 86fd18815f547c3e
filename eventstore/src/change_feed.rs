//! What a read model just learned, pushed as it learns it: each time a projection's checkpoint
//! moves — in any process, since the [`CheckpointWatch`] hears them all — the streams of one type
//! that the newly applied events changed, sent to this process's subscribers.
//!
//! One query per checkpoint move, shared by every subscriber, and none while nobody listens. A
//! subscriber may watch some streams only: it is then handed only the messages naming one of
//! them, looked up by stream, so that a thousand subscribers watching quiet streams cost nothing
//! per message. A subscriber that falls behind its queue is not waited for: it learns that it
//! lagged (and must resync) instead of being buffered without bound.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{ChangedStream, changed_streams};
use crate::{CheckpointWatch, Position};

/// The most events one message sums up (and so the most streams it names); beyond, it says
/// "everything may have changed". It bounds what a subscriber coming back from far behind costs.
pub const MAX_EVENTS_PER_MESSAGE: i64 = 1000;

/// How many messages a subscriber may fall behind before it is told to resync.
const QUEUE: usize = 64;

/// How many subscribers coming back may read what they missed at once.
pub const MAX_CATCH_UPS: usize = 4;

/// The read model moved to `position`; `streams` changed since the previous message, or, if
/// `None`, too many to name (or they could not be read): a subscriber refetches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub position: Position,
    pub streams: Option<Vec<ChangedStream>>,
}

#[derive(Clone)]
pub struct ChangeFeed {
    pool: PgPool,
    stream_type: &'static str,
    subscribers: Arc<Mutex<Subscribers>>,
    catch_ups: Arc<Semaphore>,
}

/// Who listens, and the position of the latest message handed to them (or, while nobody
/// listened, passed over). From the start of the log until the checkpoint is first seen: the
/// first message then covers everything before it (and says so if that is too much to name).
struct Subscribers {
    /// The feed has stopped (shutdown).
    closed: bool,
    position: Position,
    next_id: u64,
    queues: HashMap<u64, Queue>,
    /// Those watching every stream.
    everything: HashSet<u64>,
    /// Those watching some streams, by stream.
    by_stream: HashMap<Uuid, HashSet<u64>>,
}

struct Queue {
    sender: mpsc::Sender<Arc<Changes>>,
    watched: Option<Vec<Uuid>>,
    lagged: Arc<AtomicBool>,
}

/// One subscriber's messages; unsubscribes when dropped.
pub struct Subscription {
    id: u64,
    receiver: mpsc::Receiver<Arc<Changes>>,
    lagged: Arc<AtomicBool>,
    subscribers: Arc<Mutex<Subscribers>>,
}

/// What a subscription says next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Changes(Arc<Changes>),
    /// It fell behind and was dropped: what it missed is unknown.
    Lagged,
    /// The feed stopped (the server is shutting down).
    Closed,
}

impl Subscription {
    pub async fn next(&mut self) -> Next {
        match self.receiver.recv().await {
            Some(changes) => Next::Changes(changes),
            None if self.lagged.load(Ordering::Acquire) => Next::Lagged,
            None => Next::Closed,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.subscribers).remove(self.id);
    }
}

impl ChangeFeed {
    /// Follows `projection`'s checkpoint and reports the changed streams of `stream_type`, until
    /// `shutdown`.
    pub fn spawn(
        pool: PgPool,
        checkpoints: &CheckpointWatch,
        projection: &'static str,
        stream_type: &'static str,
        shutdown: CancellationToken,
    ) -> (ChangeFeed, JoinHandle<()>) {
        // Watching before reading the start: a move in between is then one the feed sees.
        let positions = checkpoints.subscribe();
        let start = positions.borrow().get(projection).copied().unwrap_or(Position::START);
        let feed = ChangeFeed {
            pool,
            stream_type,
            subscribers: Arc::new(Mutex::new(Subscribers::starting_at(start))),
            catch_ups: Arc::new(Semaphore::new(MAX_CATCH_UPS)),
        };
        let task = tokio::spawn(feed.clone().follow(positions, projection, shutdown));
        (feed, task)
    }

    /// Messages naming any of `streams` (all messages for `None`) from now on, and the position
    /// they start after: a catch-up from a subscriber's last position up to there, then these
    /// messages, misses nothing and repeats nothing.
    pub fn subscribe(&self, streams: Option<Vec<Uuid>>) -> (Subscription, Position) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        // Under the lock the feed holds while it moves and hands out: the subscription and the
        // position belong to the same moment.
        let mut subscribers = lock(&self.subscribers);
        let id = subscribers.next_id;
        // Once the feed has stopped, the sender is dropped here and the subscription ends at once.
        if !subscribers.closed {
            subscribers.add(id, Queue { sender, watched: streams, lagged: lagged.clone() });
        }
        let position = subscribers.position;
        drop(subscribers);
        (Subscription { id, receiver, lagged, subscribers: self.subscribers.clone() }, position)
    }

    /// The changes in `(after, up_to]`, read from the store, for a subscriber coming back. At
    /// most [`MAX_CATCH_UPS`] read at once; beyond, or if the store cannot say, the answer is
    /// "everything may have changed" — so that clients coming back all at once (after a restart,
    /// or on purpose) cannot take the connection pool from commands.
    pub async fn catch_up(&self, after: Position, up_to: Position) -> Changes {
        let Ok(_reading) = self.catch_ups.try_acquire() else {
            return Changes { position: up_to, streams: None };
        };
        self.read(after, up_to).await
    }

    async fn follow(
        self,
        mut positions: watch::Receiver<HashMap<String, Position>>,
        projection: &'static str,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                changed = positions.changed() => if changed.is_err() { break },
                _ = shutdown.cancelled() => break,
            }
            let Some(now) = positions.borrow_and_update().get(projection).copied() else { continue };
            let before = {
                let mut subscribers = lock(&self.subscribers);
                if now == subscribers.position {
                    continue;
                }
                if subscribers.queues.is_empty() {
                    // Nobody to tell; whoever subscribes next starts from here.
                    subscribers.position = now;
                    continue;
                }
                if now < subscribers.position {
                    // The read model went back (a rebuild, another history of the log): what
                    // subscribers were shown may be gone, so they read everything again.
                    subscribers.hand_out(Arc::new(Changes { position: now, streams: None }));
                    continue;
                }
                subscribers.position
            };
            // Read without the lock: a subscriber arriving meanwhile starts from `before` and
            // gets this message. The feed's own read is not subject to the catch-up limit.
            let changes = Arc::new(self.read(before, now).await);
            lock(&self.subscribers).hand_out(changes);
        }
        lock(&self.subscribers).close();
    }

    /// What changed in `(after, up_to]`; "everything" if the store cannot say.
    async fn read(&self, after: Position, up_to: Position) -> Changes {
        match changed_streams(&self.pool, self.stream_type, after, up_to, MAX_EVENTS_PER_MESSAGE).await {
            Ok(streams) => Changes { position: up_to, streams },
            Err(error) => {
                tracing::warn!(%error, stream_type = self.stream_type, "cannot read what changed; subscribers resync");
                Changes { position: up_to, streams: None }
            }
        }
    }
}

impl Subscribers {
    fn starting_at(position: Position) -> Subscribers {
        Subscribers {
            closed: false,
            position,
            next_id: 0,
            queues: HashMap::new(),
            everything: HashSet::new(),
            by_stream: HashMap::new(),
        }
    }

    fn add(&mut self, id: u64, queue: Queue) {
        self.next_id += 1;
        match &queue.watched {
            None => {
                self.everything.insert(id);
            }
            Some(streams) => {
                for stream in streams {
                    self.by_stream.entry(*stream).or_default().insert(id);
                }
            }
        }
        self.queues.insert(id, queue);
    }

    /// Every subscription ends with the feed (once it has read what is queued), and none begins
    /// after it.
    fn close(&mut self) {
        self.closed = true;
        self.queues.clear();
        self.everything.clear();
        self.by_stream.clear();
    }

    /// Moves to the message's position and queues it for whoever it concerns; a full queue
    /// drops its subscriber, who learns that it lagged.
    fn hand_out(&mut self, changes: Arc<Changes>) {
        self.position = changes.position;
        let concerned: Vec<u64> = match &changes.streams {
            None => self.queues.keys().copied().collect(),
            Some(streams) => {
                let mut ids: HashSet<u64> = self.everything.clone();
                for stream in streams {
                    if let Some(watching) = self.by_stream.get(&stream.stream_id) {
                        ids.extend(watching);
                    }
                }
                ids.into_iter().collect()
            }
        };
        for id in concerned {
            let Some(queue) = self.queues.get(&id) else { continue };
            if queue.sender.try_send(changes.clone()).is_err() {
                queue.lagged.store(true, Ordering::Release);
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(queue) = self.queues.remove(&id) else { return };
        match queue.watched {
            None => {
                self.everything.remove(&id);
            }
            Some(streams) => {
                for stream in streams {
                    if let Some(watching) = self.by_stream.get_mut(&stream) {
                        watching.remove(&id);
                        if watching.is_empty() {
                            self.by_stream.remove(&stream);
                        }
                    }
                }
            }
        }
    }
}

fn lock(subscribers: &Mutex<Subscribers>) -> MutexGuard<'_, Subscribers> {
    subscribers.lock().expect("the feed's subscribers are never poisoned")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribers() -> Arc<Mutex<Subscribers>> {
        Arc::new(Mutex::new(Subscribers::starting_at(Position::START)))
    }

    fn feed(subscribers: Arc<Mutex<Subscribers>>) -> ChangeFeed {
        // A pool that never connects: these tests hand messages out by hand.
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        ChangeFeed { pool, stream_type: "test", subscribers, catch_ups: Arc::new(Semaphore::new(1)) }
    }

    fn changes(n: i64, streams: &[Uuid]) -> Arc<Changes> {
        Arc::new(Changes {
            position: Position { transaction_id: n, global_position: n },
            streams: Some(streams.iter().map(|&stream_id| ChangedStream { stream_id, first_version: 2 }).collect()),
        })
    }

    #[tokio::test]
    async fn a_read_model_that_went_back_tells_every_subscriber_to_read_everything_again() {
        let at = |n| Position { transaction_id: n, global_position: n };
        let shared = Arc::new(Mutex::new(Subscribers::starting_at(at(5))));
        let feed = feed(shared.clone());
        let (mut watching, _) = feed.subscribe(Some(vec![Uuid::new_v4()]));
        let (checkpoints, positions) = watch::channel(HashMap::from([("p".to_owned(), at(5))]));
        let shutdown = CancellationToken::new();
        let following = tokio::spawn(feed.clone().follow(positions, "p", shutdown.clone()));
        // A rebuild began: the checkpoint is back at 3. No read of what changed is needed (this
        // feed's pool cannot connect): everything may have.
        checkpoints.send_replace(HashMap::from([("p".to_owned(), at(3))]));
        assert_eq!(watching.next().await, Next::Changes(Arc::new(Changes { position: at(3), streams: None })));
        assert_eq!(feed.subscribe(None).1, at(3), "the feed goes on from where the read model is");
        shutdown.cancel();
        following.await.unwrap();
    }

    #[tokio::test]
    async fn each_subscriber_gets_only_what_it_watches_and_a_laggard_is_dropped() {
        let shared = subscribers();
        let feed = feed(shared.clone());
        let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (mut all, _) = feed.subscribe(None);
        let (mut watching_mine, _) = feed.subscribe(Some(vec![mine]));
        let (mut watching_other, at) = feed.subscribe(Some(vec![other]));
        assert_eq!(at, Position::START);

        lock(&shared).hand_out(changes(1, &[mine]));
        assert_eq!(all.next().await, Next::Changes(changes(1, &[mine])));
        assert_eq!(watching_mine.next().await, Next::Changes(changes(1, &[mine])));
        assert!(watching_other.receiver.try_recv().is_err(), "nothing for a stream it does not watch");
        assert_eq!(feed.subscribe(None).1, Position { transaction_id: 1, global_position: 1 });

        // Everyone hears "everything".
        lock(&shared).hand_out(Arc::new(Changes {
            position: Position { transaction_id: 2, global_position: 2 },
            streams: None,
        }));
        assert!(matches!(watching_other.next().await, Next::Changes(changes) if changes.streams.is_none()));

        // A subscriber that does not read is dropped once its queue is full, and told so.
        for n in 3..3 + QUEUE as i64 + 1 {
            lock(&shared).hand_out(changes(n, &[other]));
        }
        for _ in 0..QUEUE {
            assert!(matches!(watching_other.next().await, Next::Changes(_)));
        }
        assert_eq!(watching_other.next().await, Next::Lagged);

        // Dropped subscriptions leave nothing behind; a feed that stopped ends what it had and
        // refuses new subscriptions.
        let (mut before_the_end, _) = feed.subscribe(Some(vec![mine]));
        drop((all, watching_mine, watching_other));
        {
            let left = lock(&shared);
            assert_eq!((left.queues.len(), left.everything.len(), left.by_stream.len()), (1, 0, 1));
        }
        lock(&shared).close();
        assert_eq!(before_the_end.next().await, Next::Closed);
        assert_eq!(feed.subscribe(None).0.next().await, Next::Closed);
        drop(before_the_end);
        let left = lock(&shared);
        assert!(left.queues.is_empty() && left.everything.is_empty() && left.by_stream.is_empty());
    }
}
