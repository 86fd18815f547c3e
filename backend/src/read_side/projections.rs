//! The projections the server runs, and how they are split.

use eventstore::CheckpointWatch;
use sqlx::PgPool;

use super::{
    AccountLedgerProjection, AccountSummaryProjection, RedisAccounts, TransfersProjection, account_ledger,
    account_summary, transfers,
};

/// The name of every projection [`run_projections`] runs in Postgres (the Redis one is
/// [`redis_accounts::PROJECTION_NAME`]).
pub const PROJECTION_NAMES: &[&str] =
    &[account_summary::PROJECTION_NAME, account_ledger::PROJECTION_NAME, transfers::PROJECTION_NAME];

/// How the partitionable projections (`account_summary`, `account_ledger`, the Redis store) are split: into how
/// many partitions, and whether a count other than the one in force may be adopted (emptying
/// their tables and applying the log again) rather than refused.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub partitions: u32,
    pub rebuild_on_change: bool,
}

/// Starts a runner for every projection (the Redis one if there is a Redis); each leads its
/// projection — or each partition of it — in one instance at a time. A new projection is a
/// module, a migration for its tables, and a line here: it catches up from the first event by
/// itself.
pub async fn run_projections(
    pool: &PgPool,
    appends: &eventstore::AppendNotifier,
    checkpoints: &CheckpointWatch,
    redis: Option<&RedisAccounts>,
    split: Split,
    instance: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, eventstore::projection::AdoptError> {
    use eventstore::projection::{run_external_partitioned, run_partitioned};
    let Split { partitions, rebuild_on_change } = split;
    let mut runners = Vec::new();
    let (summary, ledger) = (AccountSummaryProjection, AccountLedgerProjection);
    runners.extend(
        run_partitioned(pool, summary, partitions, rebuild_on_change, appends, checkpoints, instance, shutdown).await?,
    );
    runners.extend(
        run_partitioned(pool, ledger, partitions, rebuild_on_change, appends, checkpoints, instance, shutdown).await?,
    );
    runners
        .extend(run_partitioned(pool, TransfersProjection, 1, false, appends, checkpoints, instance, shutdown).await?);
    if let Some(redis) = redis {
        assert_eq!(redis.partitions(), partitions, "the Redis store is split as the read model is");
        // The store follows the count in force without asking: it is rebuilt from the log, and
        // the Postgres projections, adopted above, refuse a count the operator did not ask for.
        // (A store written before it was split has a checkpoint row of its own: the first start
        // with more partitions changes the count without PROJECTION_PARTITIONS_REBUILD.)
        let may_change = true;
        let redis = redis.clone().loading_keys_from(pool.clone());
        runners
            .extend(run_external_partitioned(pool, redis, partitions, may_change, appends, instance, shutdown).await?);
    }
    Ok(runners)
}
