//! B13: one projection split into partitions, catching up with a backlog. The backlog (B4's
//! account events, inserted in bulk) is drained by `account_summary` whole, then split 2 and 4
//! ways, the partitions' batches running at once on two pools — two instances, as far as the
//! database can tell — into emptied tables each time (changing the count is a rebuild).
//!
//! Baseline: the same projection unsplit (one partition), in the same run. Each partition reads
//! every event row of the log and takes only its streams' events whole, so splitting pays in
//! parallel work, not in less work: on this 2-core machine the database's cores are the limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::read_side::AccountSummaryProjection;
use eventstore::projection::{Partition, PartitionShare, adopt_count};
use eventstore::{AppendNotifier, Progress, Projection, ProjectionRunner};
use rust_decimal::Decimal;
use sqlx::PgPool;

use super::Outcome;
use crate::{Context, Size, database, report};

const EVENTS_PER_ACCOUNT: i64 = 100;
const CHUNK: i64 = 50_000;

pub async fn run(context: Context) -> Outcome {
    let events: i64 = match context.size {
        Size::Smoke => 2_000,
        Size::Default | Size::Big => 200_000,
    };
    let accounts = events / EVENTS_PER_ACCOUNT;
    report::heading(
        "b13_partitioned_catch_up",
        &format!(
            "account_summary draining {events} events over {accounts} accounts: whole, then 2 and 4 partitions on two pools"
        ),
    );
    let pool = &context.pool;
    database::insert_backlog(pool, "b13-", accounts, EVENTS_PER_ACCOUNT, CHUNK).await?;

    // Two "instances": each its own pool, as two server processes would have.
    let instances = [database::pool(10).await?, database::pool(10).await?];
    let mut whole = None;
    for count in [1, 2, 4] {
        let (applied, elapsed) = drain(pool, &instances, count).await?;
        if applied != events as usize {
            return Err(format!("{count} partitions applied {applied} events of {events}").into());
        }
        verify(pool, accounts).await?;
        let rate = report::per_second(applied, elapsed);
        match whole {
            None => {
                report::figure("account_summary catch-up, 1 partition", rate, "events/s");
                whole = Some(rate);
            }
            Some(baseline) => {
                report::against(
                    &format!("account_summary catch-up, {count} partitions"),
                    rate,
                    "1 partition",
                    baseline,
                    "events/s",
                );
                report::note(&format!("B13: {count} partitions ÷ 1 = {:.2}", rate / baseline));
            }
        }
    }
    // Back to one partition (its table emptied).
    adopt_count(pool, AccountSummaryProjection::NAME, AccountSummaryProjection::TABLES, 1, true).await?;
    for instance in instances {
        instance.close().await;
    }
    Ok(())
}

/// Empties the table, splits the projection `count` ways, and drains every partition at once,
/// alternating partitions between the two instances' pools; returns (applied, elapsed).
async fn drain(
    pool: &PgPool,
    instances: &[PgPool; 2],
    count: u32,
) -> Result<(usize, Duration), Box<dyn std::error::Error>> {
    let projection = AccountSummaryProjection;
    // From 1 to 1 nothing would be emptied: go through another count first.
    adopt_count(pool, AccountSummaryProjection::NAME, AccountSummaryProjection::TABLES, count + 1, true).await?;
    adopt_count(pool, AccountSummaryProjection::NAME, AccountSummaryProjection::TABLES, count, true).await?;
    let share = Arc::new(PartitionShare::new(AccountSummaryProjection::NAME, count));
    let started = Instant::now();
    let tasks: Vec<_> = Partition::all(count)
        .map(|partition| {
            let instance = instances[partition.index as usize % 2].clone();
            let runner = ProjectionRunner::new(instance, projection, AppendNotifier::new().subscribe(), "bench")
                .partition(partition, share.clone());
            tokio::spawn(async move {
                let mut applied = 0;
                loop {
                    match runner.run_batch().await.map_err(|error| error.to_string())? {
                        Progress::Applied(n) => applied += n,
                        Progress::CaughtUp | Progress::NotLeading | Progress::SwapPending => break,
                        Progress::HeldBack => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Ok::<usize, String>(applied)
            })
        })
        .collect();
    let mut read_past = 0;
    for task in tasks {
        read_past += task.await??;
    }
    let elapsed = started.elapsed();
    // Each partition read past every event; together they applied each one once.
    let applied: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(events_applied), 0)::bigint FROM projection_checkpoints
         WHERE projection_name = $1 OR starts_with(projection_name, $1 || '/')",
    )
    .bind(AccountSummaryProjection::NAME)
    .fetch_one(pool)
    .await?;
    debug_assert!(read_past >= applied as usize);
    Ok((applied as usize, elapsed))
}

/// The table holds what the backlog says: every account, every balance.
async fn verify(pool: &PgPool, accounts: i64) -> Outcome {
    let (rows, total): (i64, Option<Decimal>) =
        sqlx::query_as("SELECT count(*), sum(current_balance) FROM account_summary").fetch_one(pool).await?;
    let each = if EVENTS_PER_ACCOUNT % 2 == 0 { Decimal::from(101) } else { Decimal::from(100) };
    let expected = each * Decimal::from(accounts);
    if rows != accounts || total != Some(expected) {
        return Err(format!(
            "account_summary does not match the backlog: {rows} rows (of {accounts}), balances {total:?} (expected {expected})"
        )
        .into());
    }
    Ok(())
}
