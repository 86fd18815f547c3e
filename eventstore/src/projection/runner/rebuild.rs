//! A runner's rebuild: batches into the shadow tables up to the live checkpoint, then the swap.

use super::{Progress, ProjectionRunner};
use crate::projection::control::{self, Swap};
use crate::projection::{Projection, ProjectionError, Target, is_transient};

impl<P: Projection> ProjectionRunner<P> {
    /// Applies the next batch of a rebuild's shadow tables, never past the live checkpoint, and
    /// swaps the shadow tables in as soon as they have reached it — however fast events arrive,
    /// since the live tables wait while this runs.
    /// Returns what the batch did and whether the rebuild has reached the live tables.
    pub(super) async fn run_rebuild_batch(&self) -> Result<(Progress, bool), ProjectionError> {
        let name = self.checkpoint_name.as_str();
        let tables = P::TABLES;
        let shadow = control::rebuild_checkpoint_name(name);
        if !control::rebuild_started(&self.pool, name).await? {
            let started = control::start_rebuild(&self.pool, name, self.epoch, tables).await;
            if self.give_up_rebuild_unless_transient(started).await?.is_none() {
                return Ok((Progress::CaughtUp, true));
            }
        }
        let live = control::checkpoint(&self.pool, name).await?;
        let (progress, reached_live) = self.batch(&shadow, Target::REBUILD, Some(live)).await?;
        if reached_live {
            let swapped = control::swap_rebuilt(&self.pool, name, self.epoch, tables).await;
            match self.give_up_rebuild_unless_transient(swapped).await? {
                Some(Swap::Swapped) => {
                    tracing::info!(projection = name, "rebuilt projection swapped in");
                    self.announce(Target::LIVE, live);
                }
                // Tried again at the next step, which comes soon: the rebuild still has work.
                Some(Swap::TablesBusy) => {
                    tracing::info!(projection = name, "the live tables are locked; swapping shortly");
                    return Ok((Progress::SwapPending, true));
                }
                Some(Swap::NotLeading) => return Ok((Progress::NotLeading, true)),
                Some(Swap::NotCaughtUp) | None => {}
            }
        }
        Ok((progress, reached_live))
    }

    /// A rebuild step that failed for good (a table that cannot be emptied or copied) ends the
    /// rebuild, with the reason in the status; a transient failure is retried.
    async fn give_up_rebuild_unless_transient<T>(
        &self,
        result: Result<T, sqlx::Error>,
    ) -> Result<Option<T>, ProjectionError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) if is_transient(&error) => Err(error.into()),
            Err(error) => {
                let name = self.checkpoint_name.as_str();
                tracing::error!(projection = name, %error, "rebuild stopped");
                control::abort_rebuild(&self.pool, name, self.epoch, P::TABLES, &error.to_string()).await?;
                Ok(None)
            }
        }
    }
}
