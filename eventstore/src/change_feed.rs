//! What a read model just learned, pushed as it learns it: each time a projection's checkpoint
//! moves — in any process, since the [`CheckpointWatch`] hears them all — the streams of one type
//! that the newly applied events changed, broadcast to this process's subscribers.
//!
//! One query per checkpoint move, shared by every subscriber, and none while nobody listens. A
//! subscriber that falls behind the broadcast's buffer is not waited for: it learns that it
//! lagged (and must resync) instead of being buffered without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{ChangedStream, changed_streams};
use crate::{CheckpointWatch, Position};

/// The most events one message sums up (and so the most streams it names); beyond, it says
/// "everything may have changed". It bounds what a subscriber coming back from far behind costs.
pub const MAX_EVENTS_PER_MESSAGE: i64 = 1000;

/// How many messages a subscriber may fall behind before it is told to resync.
const BUFFER: usize = 256;

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
    sender: broadcast::Sender<Arc<Changes>>,
    /// The position of the latest message sent (or, while nobody listened, passed over). From
    /// the start of the log until the checkpoint is first seen: the first message then covers
    /// everything before it (and says so if that is too much to name).
    position: Arc<Mutex<Position>>,
    catch_ups: Arc<Semaphore>,
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
            sender: broadcast::Sender::new(BUFFER),
            position: Arc::new(Mutex::new(start)),
            catch_ups: Arc::new(Semaphore::new(MAX_CATCH_UPS)),
        };
        let task = tokio::spawn(feed.clone().follow(positions, projection, shutdown));
        (feed, task)
    }

    /// Messages from now on, and the position they start after: a catch-up from a subscriber's
    /// last position up to there, then these messages, misses nothing and repeats nothing.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Changes>>, Position) {
        // Under the position's lock, which the feed holds while it moves and sends: the
        // subscription and the position belong to the same moment.
        let position = self.position.lock().expect("the feed's position is never poisoned");
        (self.sender.subscribe(), *position)
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
                changed = positions.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            let Some(now) = positions.borrow_and_update().get(projection).copied() else { continue };
            let before = {
                let mut position = self.position.lock().expect("the feed's position is never poisoned");
                if now <= *position {
                    continue;
                }
                if self.sender.receiver_count() == 0 {
                    // Nobody to tell; whoever subscribes next starts from here.
                    *position = now;
                    continue;
                }
                *position
            };
            // Read without the lock: a subscriber arriving meanwhile starts from `before` and
            // gets this message.
            // The feed's own read, one per move, is not subject to the catch-up limit.
            let changes = self.read(before, now).await;
            let mut position = self.position.lock().expect("the feed's position is never poisoned");
            *position = now;
            let _ = self.sender.send(Arc::new(changes));
        }
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
