//! Writers of one stream take turns in-process before they take a database connection.
//!
//! The stream's advisory lock already makes its writers take turns in Postgres, but each of
//! them waits there holding a pooled connection: a few dozen commands on one hot stream would
//! hold the whole pool, and every other stream would wait for a connection. Queued here
//! instead, at most one writer per stream and process holds a connection; the advisory lock
//! still orders writers of different processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

#[derive(Default)]
pub struct StreamTurns {
    /// One queue per stream that has a writer; removed when its last writer is done.
    queues: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

/// A writer's turn on a stream; the next writer's turn begins when it is dropped.
pub struct Turn<'a> {
    turns: &'a StreamTurns,
    stream: Uuid,
    queue: Arc<tokio::sync::Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("stream {stream} is too busy: no turn within {waited:?}")]
pub struct TooBusy {
    pub stream: Uuid,
    pub waited: Duration,
}

impl StreamTurns {
    pub fn new() -> StreamTurns {
        StreamTurns::default()
    }

    /// Waits (at most `patience`) for the stream's turn, in arrival order.
    ///
    /// # Errors
    ///
    /// [`TooBusy`] when the turn did not come within `patience`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, the caller leaves the queue; the [`Turn`] it returns
    /// hands the stream to the next in line when dropped, however the holder ends.
    pub async fn take(&self, stream: Uuid, patience: Duration) -> Result<Turn<'_>, TooBusy> {
        let queue = self.queues.lock().expect("stream queues are never poisoned").entry(stream).or_default().clone();
        let mut turn = Turn { turns: self, stream, queue: queue.clone(), held: None };
        match tokio::time::timeout(patience, queue.lock_owned()).await {
            Ok(held) => {
                turn.held = Some(held);
                Ok(turn)
            }
            // Dropping `turn` takes this writer out of the queue.
            Err(_) => Err(TooBusy { stream, waited: patience }),
        }
    }

    /// Streams with writers in this process (for tests and metrics).
    pub fn busy_streams(&self) -> usize {
        self.queues.lock().expect("stream queues are never poisoned").len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.held.take();
        let mut queues = self.turns.queues.lock().expect("stream queues are never poisoned");
        // The map's reference and this one: no other writer waits for the stream.
        if Arc::strong_count(&self.queue) == 2 {
            queues.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writers_of_one_stream_take_turns_and_others_do_not_wait() {
        let turns = StreamTurns::new();
        let (hot, cold) = (Uuid::new_v4(), Uuid::new_v4());
        let first = turns.take(hot, Duration::from_secs(1)).await.unwrap();
        let waited = turns.take(hot, Duration::from_millis(50)).await;
        assert!(waited.is_err(), "a second writer got the hot stream's turn");
        let other = turns.take(cold, Duration::from_millis(50)).await;
        assert!(other.is_ok(), "another stream waited for the hot one");
        drop(other);
        drop(first);
        assert!(turns.take(hot, Duration::from_millis(50)).await.is_ok());
        assert_eq!(turns.busy_streams(), 0, "finished streams are forgotten");
    }
}
