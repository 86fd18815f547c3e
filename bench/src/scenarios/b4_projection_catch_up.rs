//! B4: a projection catching up with a backlog. The backlog (valid v2 account events: each
//! account opened, then deposits and withdrawals that never overdraw, interleaved across
//! accounts as many concurrent users would write them) is inserted in bulk, bypassing the
//! write path; then each projection drains it alone, through `ProjectionRunner::run_batch`
//! (its production batch size) into fresh read tables, one after the other — and the Redis
//! projection through `ExternalProjectionRunner::run_step` into an empty prefix of `REDIS_URL`.
//!
//! Baseline: B1's `eventstore::append` rate at 32 clients (measured here if B1 did not run):
//! a projection should catch up much faster than writers can write (target ≥ 3×).

use std::time::{Duration, Instant};

use backend::read_side::{AccountLedgerProjection, AccountSummaryProjection};
use eventstore::projection::ExternalProjectionRunner;
use eventstore::{AppendNotifier, Progress, Projection, ProjectionRunner};
use rust_decimal::Decimal;
use sqlx::PgPool;

use super::Outcome;
use super::b1_append::{self, Path};
use crate::diagnose::Probe;
use crate::redis_store::BenchRedis;
use crate::{B1_APPEND_32, Context, Size, database, report};

/// Events per account in the backlog.
const EVENTS_PER_ACCOUNT: i64 = 100;
/// Events per bulk INSERT (one transaction each).
const CHUNK: i64 = 50_000;

pub async fn run(context: Context) -> Outcome {
    let events: i64 = match context.size {
        Size::Smoke => 2_000,
        Size::Default => 200_000,
        Size::Big => 1_000_000,
    };
    let accounts = events / EVENTS_PER_ACCOUNT;
    report::heading(
        "b4_projection_catch_up",
        &format!("a backlog of {events} events over {accounts} accounts, drained by each projection"),
    );
    let pool = &context.pool;

    let started = Instant::now();
    database::insert_backlog(pool, "b4-", accounts, EVENTS_PER_ACCOUNT, CHUNK).await?;
    report::figure(
        "backlog inserted in bulk (INSERT … SELECT)",
        report::per_second(events as usize, started.elapsed()),
        "events/s",
    );

    let summary = drain(&context, AccountSummaryProjection).await?;
    let ledger = drain(&context, AccountLedgerProjection).await?;
    verify(pool, accounts, events).await?;
    let redis = BenchRedis::new("b4")?;
    let in_redis = drain_into_redis(&context, &redis).await;
    let verified = match &in_redis {
        Ok(_) => verify_redis(&redis, accounts).await,
        Err(_) => Ok(()),
    };
    redis.clear().await?;
    let in_redis = in_redis?;
    verified?;

    let baseline = match context.shared.get(B1_APPEND_32) {
        Some(rate) => rate,
        None => {
            // Measured after the drain: these appends are not account events, and the
            // projections must not meet them.
            let (warmup, duration) = context.size.pick(
                (Duration::from_millis(100), Duration::from_millis(300)),
                (Duration::from_secs(1), Duration::from_secs(5)),
            );
            let rate = b1_append::appends(pool, Path::EventStore, 32, warmup, duration).await.rate();
            report::note(&format!(
                "B1 did not run: eventstore::append at 32 clients, measured now: {rate:.0} events/s"
            ));
            rate
        }
    };
    for (name, (applied, elapsed)) in
        [("account_summary", summary), ("account_ledger", ledger), ("redis_accounts", in_redis)]
    {
        if applied != events as usize {
            return Err(format!("{name} applied {applied} events of {events}").into());
        }
        let rate = report::per_second(applied, elapsed);
        report::against(&format!("{name} catch-up"), rate, "B1 append @32", baseline, "events/s");
        let ratio = rate / baseline;
        report::target(&format!("B4: {name} ≥ 3 × B1's append rate"), ratio >= 3.0, &format!("{ratio:.2}"));
    }
    Ok(())
}

/// Runs batches until the projection has applied every event; returns (applied, elapsed).
async fn drain<P: Projection>(
    context: &Context,
    projection: P,
) -> Result<(usize, Duration), Box<dyn std::error::Error>> {
    let name = P::NAME;
    let runner = ProjectionRunner::new(context.pool.clone(), projection, AppendNotifier::new().subscribe(), "bench");
    steps_until_caught_up(context, name, || runner.run_batch()).await
}

/// The Redis projection's steps until it has applied every event; returns (applied, elapsed).
async fn drain_into_redis(
    context: &Context,
    redis: &BenchRedis,
) -> Result<(usize, Duration), Box<dyn std::error::Error>> {
    let accounts = redis.accounts.clone();
    let runner =
        ExternalProjectionRunner::new(context.pool.clone(), accounts, AppendNotifier::new().subscribe(), "bench");
    steps_until_caught_up(context, "redis_accounts", || runner.run_step()).await
}

/// Calls `step` until it has nothing more to apply; returns (events applied, elapsed).
async fn steps_until_caught_up<F, E>(
    context: &Context,
    name: &str,
    step: impl Fn() -> F,
) -> Result<(usize, Duration), Box<dyn std::error::Error>>
where
    F: std::future::Future<Output = Result<Progress, E>>,
    E: std::error::Error + 'static,
{
    let probe = Probe::start(context, name);
    let started = Instant::now();
    let mut applied = 0;
    let mut told = Instant::now();
    loop {
        if told.elapsed() >= Duration::from_secs(30) {
            report::note(&format!("{name}: {applied} events applied after {:.0} s", started.elapsed().as_secs_f64()));
            told = Instant::now();
        }
        match step().await.map_err(|error| error.to_string())? {
            Progress::Applied(n) => applied += n,
            // Batches driven by hand lead no epoch and rebuild nothing: the last two never come.
            Progress::CaughtUp | Progress::NotLeading | Progress::SwapPending => break,
            // A transaction somewhere in the cluster holds the log back.
            Progress::HeldBack => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    let elapsed = started.elapsed();
    probe.finish().await;
    Ok((applied, elapsed))
}

/// Redis holds what the backlog says: every account ranked, every balance.
async fn verify_redis(redis: &BenchRedis, accounts: i64) -> Outcome {
    let ranked = redis.accounts.highest(Decimal::ZERO, None, accounts + 1).await?.value;
    let total: Decimal = ranked.iter().map(|account| account.current_balance).sum();
    let each = if EVENTS_PER_ACCOUNT % 2 == 0 { Decimal::from(101) } else { Decimal::from(100) };
    let expected = each * Decimal::from(accounts);
    if ranked.len() as i64 != accounts || total != expected {
        return Err(format!(
            "Redis does not match the backlog: {} accounts (of {accounts}), balances {total} (expected {expected})",
            ranked.len()
        )
        .into());
    }
    report::note("verified: Redis ranks every account with the balance the backlog says");
    Ok(())
}

/// The read models hold what the backlog says: every account, every event, every balance.
async fn verify(pool: &PgPool, accounts: i64, events: i64) -> Outcome {
    let (rows, total): (i64, Option<Decimal>) =
        sqlx::query_as("SELECT count(*), sum(current_balance) FROM account_summary").fetch_one(pool).await?;
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM account_ledger").fetch_one(pool).await?;
    // 100.00 to open, then +1 −1 …: 101.00 after an even number of events, 100.00 after an odd.
    let each = if EVENTS_PER_ACCOUNT % 2 == 0 { Decimal::from(101) } else { Decimal::from(100) };
    let expected = each * Decimal::from(accounts);
    if rows != accounts || ledger != events || total != Some(expected) {
        return Err(format!(
            "the read models do not match the backlog: {rows} summaries (of {accounts}), {ledger} ledger rows (of {events}), balances {total:?} (expected {expected})"
        )
        .into());
    }
    report::note("verified: every account, ledger row and balance is as the backlog says");
    Ok(())
}
