//! Checks that the cluster the store runs on can keep the store's promises.
//!
//! Readers walk the log in `(transaction_id, global_position)` order and only below the oldest
//! running transaction (see [`crate::read_all_after`]), which holds only while every new event
//! gets a transaction id above every stored one. A dump restored into another cluster breaks
//! that: the stored ids come along, but the new cluster counts its own from where it is, often
//! far below. Every new event would then sort before the projections' checkpoints and never be
//! read, without an error anywhere. A physical copy (`pg_basebackup`, a promoted replica) or
//! `pg_upgrade` keeps the counter; a dump and restore does not.

use sqlx::PgExecutor;

/// Transaction ids per `pg_xact` segment file. `pg_resetwal` documents a multiple of this as a
/// safe next transaction id: the server creates a segment when its first id is assigned, but
/// cannot start at an id in the middle of a segment it does not have.
const XIDS_PER_XACT_SEGMENT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClusterMoveError {
    #[error(
        "the newest stored event has transaction id {newest_stored}, but this Postgres cluster \
         will assign {next_assigned} next: the database was probably restored from a dump into \
         another cluster, and new events would sort before the projections' checkpoints and never \
         be read. Remedy: on this cluster run `vacuumdb --all --freeze` (without it the \
         jump below makes existing rows invisible), stop Postgres, run `pg_resetwal -e {} -x {} \
         <data directory>` as its owner and start it again; or restore into a cluster whose \
         transaction ids are already beyond {newest_stored}",
        safe_next_transaction_id(*.newest_stored).epoch,
        safe_next_transaction_id(*.newest_stored).xid
    )]
    TransactionIdsBehind { newest_stored: i64, next_assigned: i64 },
    #[error("cannot compare stored and upcoming transaction ids: {0}")]
    Database(#[from] sqlx::Error),
}

/// Fails with [`ClusterMoveError::TransactionIdsBehind`] unless every stored event's
/// transaction id is below the next one this cluster will assign. An empty store passes.
///
/// Cheap enough for every start-up: the newest id comes from the end of the readers' index, and
/// reading the next id assigns none (`pg_current_xact_id()` would).
#[tracing::instrument(skip(executor))]
pub async fn check_transaction_ids(executor: impl PgExecutor<'_>) -> Result<(), ClusterMoveError> {
    let (newest_stored, next_assigned): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT transaction_id FROM events ORDER BY transaction_id DESC LIMIT 1)::text::bigint,
                pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
    )
    .fetch_one(executor)
    .await?;
    match newest_stored {
        Some(newest_stored) if newest_stored >= next_assigned => {
            Err(ClusterMoveError::TransactionIdsBehind { newest_stored, next_assigned })
        }
        _ => Ok(()),
    }
}

/// A next transaction id for `pg_resetwal`, split the way it takes it: `-e` the epoch (the high
/// 32 bits of a 64-bit id), `-x` the id within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetTransactionId {
    pub epoch: u32,
    pub xid: u32,
}

/// The first id above `newest_stored` that starts a `pg_xact` segment, skipping the ids 0-2 that
/// Postgres reserves at the start of each epoch.
pub fn safe_next_transaction_id(newest_stored: i64) -> ResetTransactionId {
    // Never negative: xid8 is unsigned, and comes through bigint only because sqlx has no xid8.
    let mut next = (newest_stored as u64 + 1).next_multiple_of(XIDS_PER_XACT_SEGMENT);
    if next as u32 == 0 {
        next += XIDS_PER_XACT_SEGMENT;
    }
    ResetTransactionId { epoch: (next >> 32) as u32, xid: next as u32 }
}

#[cfg(test)]
mod tests {
    use super::{ResetTransactionId, safe_next_transaction_id};

    #[test]
    fn the_next_transaction_id_starts_the_segment_after_the_newest_stored_one() {
        let reset = |epoch, xid| ResetTransactionId { epoch, xid };
        assert_eq!(safe_next_transaction_id(730), reset(0, 1 << 20));
        assert_eq!(safe_next_transaction_id((1 << 20) - 1), reset(0, 1 << 20));
        assert_eq!(safe_next_transaction_id(1 << 20), reset(0, 2 << 20));
        assert_eq!(safe_next_transaction_id(3_000_000_123), reset(0, 3_001_024_512));
        assert_eq!(safe_next_transaction_id(5_000_000_000), reset(1, 705_691_648));
        // Never an id reserved at the start of an epoch.
        assert_eq!(safe_next_transaction_id(u32::MAX as i64), reset(1, 1 << 20));
    }
}
