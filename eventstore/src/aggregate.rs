//! What an aggregate gives the store, and loading one: an aggregate supplies its pure parts
//! (decide, evolve, how its events and commands look stored); the store reads its stream from
//! the latest snapshot, folds it, and runs its commands ([`crate::commands`]).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::snapshots::save_snapshot;
use crate::store::{read_stream_from_snapshot, read_stream_until};
use crate::{NewEvent, RecordedEvent, SnapshotVersion};

/// An aggregate's pure parts. Everything with I/O (locking, idempotency, loading, appending,
/// retrying, snapshots) is the store's; nothing here touches a database.
pub trait Aggregate: Send + Sync + 'static {
    /// The type of the aggregate's streams (`stream_type` of its events), e.g. `"account"`.
    const STREAM_TYPE: &'static str;
    /// What a stored snapshot must have been made with to be loaded. Bump its `fold` whenever
    /// `evolve` (or an upcaster behind `decode`) changes what a stored event does to the state.
    const SNAPSHOT_VERSION: SnapshotVersion;

    /// The state before the first event is [`Default`]; snapshots store it as JSON.
    type State: Default + Serialize + DeserializeOwned + Send + Sync;
    type Command: Send + Sync;
    type Event: Send + Sync;
    /// Why a command was refused. Remembered with the command, so a retry is refused alike.
    type Refusal: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Why a stored event cannot be read.
    type DecodeError: std::error::Error + Send + Sync + 'static;

    /// The events a command causes in a state, or why it is refused.
    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Refusal>;
    /// The state after an event.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    /// An event as it is stored, with the command's metadata.
    fn encode(event: &Self::Event, metadata: &Value) -> NewEvent;
    /// A stored event, read back (upcast from older shapes as needed).
    fn decode(event: &RecordedEvent) -> Result<Self::Event, Self::DecodeError>;
    /// What identifies a command sent to a stream, to tell a retry (the same request under the
    /// same command id: answered as the first time) from a reused id (another request).
    fn request(stream_id: Uuid, command: &Self::Command) -> Value;
}

/// The latest version, for [`load`].
pub const LATEST: i64 = i64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum LoadError<D> {
    #[error(transparent)]
    Unreadable(D),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An aggregate's state at a version, and how it was obtained.
pub struct Loaded<A: Aggregate> {
    pub state: A::State,
    /// The stream version the state reflects; 0 for a stream without events.
    pub version: i64,
    /// The snapshot the fold started from, if any.
    pub snapshot_version: Option<i64>,
    /// The events folded after the snapshot, with their decoded form.
    pub events: Vec<(RecordedEvent, A::Event)>,
}

/// The aggregate as it was at `up_to_version` ([`LATEST`] for now): the newest usable snapshot at
/// or below it plus the events after it, read in one statement, so that loading costs
/// O(snapshot interval) whatever the stream's history.
///
/// # Errors
///
/// [`LoadError::Unreadable`] when a stored event does not decode (a snapshot that does not is
/// ignored, and the stream folded from its first event); [`LoadError::Database`].
pub async fn load<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: Uuid,
    up_to_version: i64,
) -> Result<Loaded<A>, LoadError<A::DecodeError>> {
    let (snapshot, mut recorded) =
        read_stream_from_snapshot(&mut *conn, stream_id, up_to_version, A::SNAPSHOT_VERSION).await?;
    let (mut state, snapshot_version) = match snapshot {
        Some(snapshot) => match serde_json::from_value::<A::State>(snapshot.state) {
            Ok(state) => (state, Some(snapshot.stream_version)),
            Err(error) => {
                // A snapshot is only a cache: fold the whole stream instead.
                tracing::warn!(%stream_id, version = snapshot.stream_version, %error, "ignoring an unreadable snapshot");
                recorded = read_stream_until(&mut *conn, stream_id, 0, up_to_version).await?;
                (A::State::default(), None)
            }
        },
        None => (A::State::default(), None),
    };
    // A stream of another aggregate (a transfer's id given as an account's) is no stream of
    // this one: not created, as an unknown id. Its events are never decoded as this one's.
    if recorded.first().is_some_and(|event| event.stream_type != A::STREAM_TYPE) {
        return Ok(Loaded { state: A::State::default(), version: 0, snapshot_version: None, events: Vec::new() });
    }
    let mut events = Vec::with_capacity(recorded.len());
    for event in recorded {
        let decoded = A::decode(&event).map_err(LoadError::Unreadable)?;
        state = A::evolve(state, &decoded);
        events.push((event, decoded));
    }
    let version = events.last().map(|(event, _)| event.stream_version).or(snapshot_version).unwrap_or(0);
    Ok(Loaded { state, version, snapshot_version, events })
}

/// Stores `state` as the stream's snapshot at `version`.
pub async fn save<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: Uuid,
    version: i64,
    state: &A::State,
) -> Result<(), sqlx::Error> {
    let state = serde_json::to_value(state).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    save_snapshot(conn, stream_id, version, A::SNAPSHOT_VERSION, &state).await
}

/// Whether moving from `old_version` to `new_version` crosses a multiple of `interval`, at
/// which a snapshot is due. Then at most `interval - 1` events (plus the events of one command)
/// follow the latest snapshot.
pub fn snapshot_due(old_version: i64, new_version: i64, interval: i64) -> bool {
    interval > 0 && old_version / interval != new_version / interval
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn a_snapshot_is_due_when_a_multiple_of_the_interval_is_crossed() {
        assert!(!snapshot_due(0, 1, 5));
        assert!(!snapshot_due(3, 4, 5));
        assert!(snapshot_due(4, 5, 5));
        assert!(snapshot_due(4, 6, 5));
        assert!(!snapshot_due(5, 6, 5));
        assert!(!snapshot_due(9, 10, 0));
    }
}
