//! The latest state of the streams this process wrote, so that the next command on a warm
//! stream decides without loading it.
//!
//! Only a cache: a state is put back only after the transaction that made it committed, and a
//! command takes it out while it works, so a failed or uncertain command leaves the stream
//! cold (the next one loads). Another process may have written the stream since: the append at
//! the cached version then finds the stream further on and fails its version check, and the
//! command is decided again on a loaded state. A refusal is remembered for good, so it is never
//! decided on a cached state (see [`crate::commands`]).

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

/// A stream's state, the version it reflects and the id of the event at that version (the
/// append checks both: see [`crate::store::append_and_record`]).
pub struct WarmState<S> {
    pub version: i64,
    pub last_event_id: Option<uuid::Uuid>,
    pub state: S,
}

pub struct WarmStreams<S> {
    states: Mutex<HashMap<Uuid, WarmState<S>>>,
    capacity: usize,
}

impl<S> WarmStreams<S> {
    /// Keeps at most `capacity` streams (0: none, every command loads).
    pub fn new(capacity: usize) -> WarmStreams<S> {
        WarmStreams { states: Mutex::new(HashMap::new()), capacity }
    }

    /// The stream's state, removed: until it is put back, the stream is cold.
    pub fn take(&self, stream_id: Uuid) -> Option<WarmState<S>> {
        self.states().remove(&stream_id)
    }

    /// The map, even if a holder panicked: it holds whole entries only (each insert or removal
    /// is one call), so what a panic left is still a valid cache.
    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, WarmState<S>>> {
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the state a committed command left the stream in. When full, every stream goes
    /// cold at once: a miss costs one load, so no eviction order is worth its bookkeeping, and
    /// clearing once per `capacity` streams costs O(1) per stream, where evicting one entry at a
    /// time would scan an ever emptier table.
    pub fn put(&self, stream_id: Uuid, warm: WarmState<S>) {
        if self.capacity == 0 {
            return;
        }
        let mut states = self.states();
        if states.len() >= self.capacity {
            states.clear();
        }
        states.insert(stream_id, warm);
    }

    pub fn len(&self) -> usize {
        self.states().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_state_is_gone_until_put_back() {
        let warm = WarmStreams::new(10);
        let stream = Uuid::new_v4();
        warm.put(stream, WarmState { version: 3, last_event_id: None, state: "three" });
        let taken = warm.take(stream).unwrap();
        assert_eq!((taken.version, taken.state), (3, "three"));
        assert!(warm.take(stream).is_none());
    }

    #[test]
    fn it_keeps_at_most_its_capacity() {
        let warm = WarmStreams::new(2);
        for version in 1..=5 {
            warm.put(Uuid::new_v4(), WarmState { version, last_event_id: None, state: () });
        }
        assert!(warm.len() <= 2);
        let off = WarmStreams::new(0);
        off.put(Uuid::new_v4(), WarmState { version: 1, last_event_id: None, state: () });
        assert!(off.is_empty());
    }
}
