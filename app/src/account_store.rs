//! Loading accounts from the event store: the latest snapshot plus the events after it, up to
//! any version, so that loading costs O(snapshot interval) whatever the account's history.

use eventstore::snapshots::save_snapshot;
use eventstore::{RecordedEvent, SnapshotVersion, read_stream_from_snapshot, read_stream_until};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{AccountEvent, AccountState, evolve};
use crate::event_codec::{self, DecodeError};

/// The shape of a stored [`AccountState`]; snapshots of another shape are ignored (and new ones
/// written as the account moves on). 2: with the deposit and withdrawal totals.
pub const SNAPSHOT_SCHEMA_VERSION: i32 = 2;

/// The meaning of the events as the fold reads them. Bump it whenever `evolve` or an upcaster in
/// `event_codec` changes what a stored event does to the state, even if the state's shape stays:
/// snapshots made before would otherwise go on carrying the old reading. Snapshots of another
/// fold version are ignored, and new ones written as accounts move on.
/// 2: a deposit or withdrawal that does not fit the balance is ignored whole (1 counted it in the
/// totals).
pub const FOLD_VERSION: i32 = 2;

/// What a snapshot must have been made with to be loaded.
const SNAPSHOT_VERSION: SnapshotVersion = SnapshotVersion { schema: SNAPSHOT_SCHEMA_VERSION, fold: FOLD_VERSION };

/// The latest version, for [`load`].
pub const LATEST: i64 = i64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Unreadable(#[from] DecodeError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An account's state at a version, and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedAccount {
    pub state: AccountState,
    /// The stream version the state reflects; 0 for an account never created.
    pub version: i64,
    /// The snapshot the fold started from, if any.
    pub snapshot_version: Option<i64>,
    /// The events folded after the snapshot, with their decoded form.
    pub events: Vec<(RecordedEvent, AccountEvent)>,
}

/// The account as it was at `up_to_version` ([`LATEST`] for now).
pub async fn load(conn: &mut PgConnection, account_id: Uuid, up_to_version: i64) -> Result<LoadedAccount, LoadError> {
    let (snapshot, mut recorded) =
        read_stream_from_snapshot(&mut *conn, account_id, up_to_version, SNAPSHOT_VERSION).await?;
    let (mut state, snapshot_version) = match snapshot {
        Some(snapshot) => match serde_json::from_value::<AccountState>(snapshot.state) {
            Ok(state) => (state, Some(snapshot.stream_version)),
            Err(error) => {
                // A snapshot is only a cache: fold the whole stream instead.
                tracing::warn!(%account_id, version = snapshot.stream_version, %error, "ignoring an unreadable snapshot");
                recorded = read_stream_until(&mut *conn, account_id, 0, up_to_version).await?;
                (AccountState::default(), None)
            }
        },
        None => (AccountState::default(), None),
    };
    let mut events = Vec::with_capacity(recorded.len());
    for event in recorded {
        let decoded = event_codec::decode(&event)?;
        state = evolve(state, &decoded);
        events.push((event, decoded));
    }
    let version = events.last().map(|(event, _)| event.stream_version).or(snapshot_version).unwrap_or(0);
    Ok(LoadedAccount { state, version, snapshot_version, events })
}

/// Whether moving from `old_version` to `new_version` crosses a multiple of `interval`, at
/// which a snapshot is due. Then at most `interval - 1` events (plus the events of one command)
/// follow the latest snapshot.
pub fn snapshot_due(old_version: i64, new_version: i64, interval: i64) -> bool {
    interval > 0 && old_version / interval != new_version / interval
}

pub async fn save(
    conn: &mut PgConnection,
    account_id: Uuid,
    version: i64,
    state: &AccountState,
) -> Result<(), sqlx::Error> {
    let state = serde_json::to_value(state).expect("account states always serialise to JSON");
    save_snapshot(conn, account_id, version, SNAPSHOT_VERSION, &state).await
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
