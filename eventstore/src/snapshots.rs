//! Snapshots: a stream's state stored every so many events, so that loading reads the latest
//! snapshot plus the events after it instead of the whole history
//! ([`crate::read_stream_from_snapshot`] reads both in one statement).

use std::sync::LazyLock;

use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A stored state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Snapshot {
    pub stream_version: i64,
    pub state: Value,
}

/// What a snapshot's state depends on besides the events. Loading uses only a snapshot made
/// with the same versions: a state of another shape would not read back, and one folded by
/// another fold would silently carry that fold's meaning of the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotVersion {
    /// The shape the state is stored in.
    pub schema: i32,
    /// The fold (with the upcasters it reads events through) that computed the state.
    pub fold: i32,
}

/// How an insert into `snapshots` meets a snapshot stored at the same version: one made by the
/// same versions is kept (both were folded from the same immutable events by the same fold);
/// one made by other versions is replaced, as loading would ignore it.
pub(crate) const SNAPSHOT_UPSERT: &str = "ON CONFLICT (stream_id, stream_version) DO UPDATE
             SET schema_version = excluded.schema_version, fold_version = excluded.fold_version,
                 state = excluded.state, created_at = excluded.created_at
             WHERE (snapshots.schema_version, snapshots.fold_version)
                 <> (excluded.schema_version, excluded.fold_version)";

/// Made once, not per snapshot.
static SAVE_SNAPSHOT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO snapshots (stream_id, stream_version, schema_version, fold_version, state)
         VALUES ($1, $2, $3, $4, $5)
         {SNAPSHOT_UPSERT}"
    )
});

/// Stores `state` as the stream's state at `stream_version`, made by `version`; a snapshot
/// already there is met as [`SNAPSHOT_UPSERT`] says.
pub async fn save_snapshot(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    stream_version: i64,
    version: SnapshotVersion,
    state: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(SAVE_SNAPSHOT.as_str())
        .bind(stream_id)
        .bind(stream_version)
        .bind(version.schema)
        .bind(version.fold)
        .bind(state)
        .execute(executor)
        .await?;
    Ok(())
}
