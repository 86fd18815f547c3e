//! The store as a projection: a batch folded in memory, written with the checkpoint's move by
//! one script; a clear that no former leader can undo.

use eventstore::ApplyError;
use eventstore::projection::{
    CompareAndSet, ExternalBatch, ExternalError, ExternalProjection, Partition, StoredCheckpoint,
};
use uuid::Uuid;

use super::scripts::{APPLY_BATCH, BEGIN_CLEAR, CLEAR_SOME, CLEARING, END_CLEAR, RETIRE_BEGIN};
use super::stored::{StoredAccount, balance_member, checkpoint_text};
use super::{PROJECTION_NAME, RedisAccounts, RedisReadError, fields_json};
use crate::read_side::account_summary::{fold, load_keys};
use bank::domain::AccountEvent;

/// At most how many passes a clear makes over the keys (each after one that found some).
const CLEAR_PASSES: usize = 5;

fn store_error(error: impl std::error::Error + Send + Sync + 'static) -> ExternalError {
    ExternalError::Store(Box::new(error))
}

impl ExternalProjection for RedisAccounts {
    const NAME: &'static str = PROJECTION_NAME;
    const EVENT_TYPES: &'static [&'static str] = AccountEvent::TYPES;
    /// An account's events change its hash and its place in its partition's rankings only.
    const PARTITIONABLE: bool = true;

    async fn checkpoint(&self, partition: Partition) -> Result<Option<StoredCheckpoint>, ExternalError> {
        Ok(self.rows(partition, &[]).await.map_err(store_error)?.0)
    }

    async fn apply(&self, batch: &ExternalBatch<'_>) -> Result<CompareAndSet, ExternalError> {
        if let Some(pool) = &self.keys_from {
            // Retried, whatever failed (see `load_keys`).
            load_keys(pool, batch.events).await.map_err(store_error)?;
        }
        let folded = fold(batch.events).map_err(|error| match error {
            ApplyError::Event { position, reason } => ExternalError::Event { position, reason },
            ApplyError::Database(error) => store_error(error),
        })?;
        let changed: Vec<Uuid> = folded.changes.iter().map(|change| change.account_id).collect();
        let keys = self.keys(batch.partition);
        let (as_of, _, stored) = self.rows(batch.partition, &changed).await.map_err(store_error)?;
        if as_of != batch.from.map(|from| StoredCheckpoint { log: batch.log.to_owned(), at: from }) {
            return Ok(CompareAndSet::CheckpointMoved);
        }
        // (id, its member before the batch if it existed, its row after).
        let mut writes: Vec<(Uuid, Option<StoredAccount>, StoredAccount)> =
            folded.new_rows.iter().map(|row| (row.account_id, None, StoredAccount::opened(row))).collect();
        for (change, stored) in folded.changes.iter().zip(stored) {
            let Some(stored) = stored else {
                // The store's checkpoint is past the account's opening, but its hash is gone: an
                // eviction, or someone's DEL. The store is rebuilt (see `may_evict`).
                return Err(ExternalError::Lost(format!(
                    "account {} changes at {} but the store no longer holds it",
                    change.account_id, change.first_event
                )));
            };
            let changed = stored.changed(change);
            writes.push((change.account_id, Some(stored), changed));
        }
        let mut script = APPLY_BATCH.prepare_invoke();
        script.key(keys.projection()).key(keys.balances()).key(keys.fence());
        let from = batch.from.map(|from| checkpoint_text(batch.log, from)).unwrap_or_default();
        script
            .arg(from)
            .arg(checkpoint_text(batch.log, batch.to))
            .arg(if batch.rebuilding { "1" } else { "0" })
            .arg(fields_json())
            .arg(batch.epoch)
            .arg(batch.log);
        for (id, before, after) in &writes {
            let member = |account: &StoredAccount| {
                balance_member(account.balance, *id).ok_or_else(|| {
                    let reason = format!("account {id}'s balance {} cannot be ranked", account.balance);
                    // No event makes such a balance (the domain refuses them): stop at the batch.
                    let position = batch.events.first().map_or(batch.to.position, |event| event.position());
                    ExternalError::Event { position, reason: reason.into() }
                })
            };
            // The owner's set it leaves (its owner forgotten, say) and the one it joins; the same
            // one for an account whose owner stays, or that is new.
            let owner_before = before.as_ref().map_or(&after.owner_id, |before| &before.owner_id);
            script
                .key(keys.account(*id))
                .key(keys.owner_balances(owner_before))
                .key(keys.owner_balances(&after.owner_id));
            script.arg(before.as_ref().map(member).transpose()?.unwrap_or_default()).arg(member(after)?);
            for value in after.values().map_err(store_error)? {
                script.arg(value);
            }
        }
        let applied: i64 = script.invoke_async(&mut self.redis.clone()).await.map_err(store_error)?;
        match applied {
            1 => Ok(CompareAndSet::Applied),
            0 => Ok(CompareAndSet::CheckpointMoved),
            _ => Err(store_error(RedisReadError::Unreadable(format!(
                "a key under {:?} holds another type than the projection writes there",
                keys.prefix
            )))),
        }
    }

    async fn retire(&self, partitions: u32, current: Option<&str>) -> Result<(), ExternalError> {
        let mut redis = self.redis.clone();
        let current = current.map(|history| format!("{history}@")).unwrap_or_default();
        // First every partition's checkpoint is marked as of no history, so that an instance
        // still running the old count reads none of them half removed.
        let mut retiring = Vec::new();
        for partition in Partition::all(partitions) {
            let keys = self.keys(partition);
            let mut begin = RETIRE_BEGIN.prepare_invoke();
            begin.key(keys.projection()).arg(CLEARING.as_str()).arg(&current);
            if begin.invoke_async::<i64>(&mut redis).await.map_err(store_error)? == 1 {
                retiring.push(keys);
            }
        }
        for keys in retiring {
            let pattern = format!("{}*", keys.prefix);
            let mut cursor = "0".to_owned();
            loop {
                // The clear's own step, keeping the projection's hash alone (given twice): the
                // retired partition's fence goes too.
                let mut script = CLEAR_SOME.prepare_invoke();
                script.key(keys.projection()).key(keys.projection());
                script.arg(&cursor).arg(&pattern).arg(CLEARING.as_str());
                let next: Option<(String, i64)> = script.invoke_async(&mut redis).await.map_err(store_error)?;
                match next {
                    // The partition is being built again: what is there is the build's.
                    None => break,
                    Some((next, _)) if next == "0" => {
                        let mut end = END_CLEAR.prepare_invoke();
                        end.key(keys.projection()).arg(CLEARING.as_str());
                        end.invoke_async::<i64>(&mut redis).await.map_err(store_error)?;
                        break;
                    }
                    Some((next, _)) => cursor = next,
                }
            }
        }
        Ok(())
    }

    async fn warning(&self) -> Option<String> {
        self.may_evict().await
    }

    async fn clear(&self, partition: Partition, epoch: i64, log: &str) -> Result<(), ExternalError> {
        let keys = self.keys(partition);
        let mut redis = self.redis.clone();
        let mut begin = BEGIN_CLEAR.prepare_invoke();
        begin.key(keys.projection()).key(keys.fence()).arg(epoch).arg(CLEARING.as_str()).arg(log);
        let begun: i64 = begin.invoke_async(&mut redis).await.map_err(store_error)?;
        if begun == 0 {
            // A later leader of this history has written: the store is theirs, and this one
            // must say so (its status), not go on as if it had cleared.
            return Err(ExternalError::Store(
                format!("the store's fence refuses epoch {epoch}: a later leader has written").into(),
            ));
        }
        // Passes over the keys until one finds none left: a `SCAN` cursor is one node's, and a
        // cluster's slot may move (or fail over) mid-clear, which would let keys slip by.
        let pattern = format!("{}*", keys.prefix);
        for _ in 0..CLEAR_PASSES {
            let (mut cursor, mut removed) = ("0".to_owned(), 0);
            loop {
                let mut script = CLEAR_SOME.prepare_invoke();
                script.key(keys.projection()).key(keys.fence()).arg(&cursor).arg(&pattern).arg(CLEARING.as_str());
                let next: Option<(String, i64)> = script.invoke_async(&mut redis).await.map_err(store_error)?;
                match next {
                    // Someone else finished the clear and builds the store again: what is left is theirs.
                    None => return Ok(()),
                    Some((next, some)) => {
                        removed += some;
                        if next == "0" {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
            if removed == 0 {
                break;
            }
        }
        let mut end = END_CLEAR.prepare_invoke();
        end.key(keys.projection()).arg(CLEARING.as_str());
        end.invoke_async::<i64>(&mut redis).await.map_err(store_error)?;
        Ok(())
    }
}
