//! What a read model just learned, pushed as it learns it: each time a projection's checkpoint
//! moves — in any process, since the [`CheckpointWatch`] hears them all — the streams of one type
//! that the newly applied events changed, broadcast to this process's subscribers.
//!
//! One query per checkpoint move, shared by every subscriber, and none while nobody listens. A
//! subscriber that falls behind the broadcast's buffer is not waited for: it learns that it
//! lagged (and must resync) instead of being buffered without bound.

use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{ChangedStream, changed_streams};
use crate::{CheckpointWatch, Position};

/// The most events one message sums up (and so the most streams it names); beyond, it says
/// "everything may have changed". It bounds what a subscriber coming back from far behind costs.
pub const MAX_EVENTS_PER_MESSAGE: i64 = 1000;

/// How many messages a subscriber may fall behind before it is told to resync.
const BUFFER: usize = 256;

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
        let feed = ChangeFeed {
            pool,
            stream_type,
            sender: broadcast::Sender::new(BUFFER),
            position: Arc::new(Mutex::new(checkpoints.position(projection).unwrap_or(Position::START))),
        };
        let task = tokio::spawn(feed.clone().follow(checkpoints.clone(), projection, shutdown));
        (feed, task)
    }

    /// Messages from now on. Subscribe before asking [`ChangeFeed::position`], and a message
    /// at or below that position is one a replay up to it covers.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Changes>> {
        self.sender.subscribe()
    }

    /// The position of the latest message: a replay from a subscriber's last position up to
    /// here, then the messages after it, misses nothing and repeats nothing.
    pub fn position(&self) -> Position {
        *self.position.lock().expect("the feed's position is never poisoned")
    }

    /// The changes in `(after, up_to]`, read from the store: for a subscriber coming back.
    pub async fn replay(&self, after: Position, up_to: Position) -> Result<Changes, sqlx::Error> {
        let streams = changed_streams(&self.pool, self.stream_type, after, up_to, MAX_EVENTS_PER_MESSAGE).await?;
        Ok(Changes { position: up_to, streams })
    }

    async fn follow(self, checkpoints: CheckpointWatch, projection: &'static str, shutdown: CancellationToken) {
        let mut positions = checkpoints.subscribe();
        loop {
            tokio::select! {
                changed = positions.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            let Some(now) = positions.borrow_and_update().get(projection).copied() else { continue };
            let before = self.position();
            if now <= before {
                continue;
            }
            if self.sender.receiver_count() == 0 {
                self.moved_to(now);
                continue;
            }
            let changes = match self.replay(before, now).await {
                Ok(changes) => changes,
                Err(error) => {
                    tracing::warn!(%error, projection, "cannot read what changed; subscribers resync");
                    Changes { position: now, streams: None }
                }
            };
            // Position first: a subscriber arriving now replays up to it and skips this message.
            self.moved_to(now);
            let _ = self.sender.send(Arc::new(changes));
        }
    }

    fn moved_to(&self, position: Position) {
        *self.position.lock().expect("the feed's position is never poisoned") = position;
    }
}
